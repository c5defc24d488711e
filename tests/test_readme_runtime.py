"""The README's runtime example, run as written against `midcall up`'s embedded, secured NATS."""

import asyncio
import re
import sys
from pathlib import Path
from typing import Any

import httpx
import nats
import nats.errors
import pytest

from shared.fabric.nats_server import free_port
from shared.security.api_keys import bearer
from shared.settings import Settings
from tests.support.api import RecordingApi
from tests.support.processes import up
from tests.test_runtime_accounts import live

README = Path(__file__).resolve().parent.parent / "README.md"


def runtime_example(heading: str = "## A runtime in") -> str:
    section = README.read_text().split(heading, 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None
    return match.group(1)


def booking(api_url: str) -> dict[str, Any]:
    """The examples' tool: their arguments as the JSON body of a POST to the test API."""
    return {
        "name": "BookAppointment",
        "parameters": {"type": "object", "properties": {"date": {}, "time": {}}},
        "request": {"url": f"{api_url}/book", "method": "POST"},
    }


async def run_example(code: str, cwd: Path) -> list[str]:
    """The lines an example printed, run in ``cwd`` (where ``.midcall`` is) as a user would."""
    example = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(example.communicate(), 60)
    assert example.returncode == 0, err.decode()
    return out.decode().splitlines()


def with_credentials(example: str, credentials: dict[str, str]) -> str:
    """The example as a runtime with its account's credentials runs it: those three values."""
    lines = {
        'password = json.loads((DATA_DIR / "nats-credentials.json").read_text())["runtime"]': (
            f"password = {credentials['password']!r}"
        ),
        'user="runtime",': f"user={credentials['user']!r},",
        'inbox_prefix="_INBOX_runtime",': f"inbox_prefix={credentials['inbox_prefix']!r},",
    }
    for line, replacement in lines.items():
        assert line in example
        example = example.replace(line, replacement)
    return example


@pytest.mark.parametrize("signed_in_as", ["runtime", "account"])
async def test_the_readmes_runtime_signs_in_places_a_call_and_hears_its_result(
    tmp_path: Path, api: RecordingApi, signed_in_as: str
) -> None:
    api.reply("POST", "/book", json={"booked": True})
    registry = free_port()
    # The example reads .midcall/ in its working directory, as after `midcall up` there.
    settings = Settings(data_dir=tmp_path / ".midcall")
    fabric = up(settings, registry)
    await fabric.start()
    try:
        # The embedded server lets no one in unsigned.
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await nats.connect(fabric.nats_url, allow_reconnect=False)
        tool = booking(api.url)
        code = runtime_example()
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{registry}", headers=bearer(fabric.admin_key)
        ) as http:
            added = await http.post("/v1/agents/salon-bot/tools", json={"tools": [tool]})
            assert added.status_code == 201, added.text
            if signed_in_as == "account":  # the salon's own runtime credentials
                assert (await http.post("/v1/accounts", json={"account_id": "salon"})).is_success
                moved = await http.put("/v1/agents/salon-bot", json={"account_id": "salon"})
                assert moved.status_code == 200, moved.text
                made = (await http.post("/v1/accounts/salon/runtime-credentials")).json()
                code = with_credentials(code, made)
                signed = {k: made[k] for k in ("user", "password", "inbox_prefix")}
                await live(fabric.nats_url, signed)
        printed = await run_example(code, tmp_path)
    finally:
        await fabric.stop()

    assert printed[0] == "pending None"
    assert printed[1] == "result {'booked': True}"
    assert "'status': 'success'" in printed[2]
    assert len(api.received) == 1


async def test_the_readmes_sdk_example_places_a_call_and_prints_its_result(
    tmp_path: Path, api: RecordingApi
) -> None:
    api.reply("POST", "/book", json={"booked": True})
    registry = free_port()
    fabric = up(Settings(data_dir=tmp_path / ".midcall"), registry)
    await fabric.start()
    try:
        tool = booking(api.url)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{registry}", headers=bearer(fabric.admin_key)
        ) as http:
            added = await http.post("/v1/agents/salon-bot/tools", json={"tools": [tool]})
            assert added.status_code == 201, added.text
        printed = await run_example(runtime_example("## The Python SDK"), tmp_path)
    finally:
        await fabric.stop()

    assert printed == ["{'booked': True}"]
    assert [r.body for r in api.received] == [b'{"date":"2024-04-20","time":"10:00 AM"}']
