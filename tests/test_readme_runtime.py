"""The README's runtime example, run as written against `midcall up`'s embedded, secured NATS."""

import asyncio
import re
import sys
from pathlib import Path

import httpx
import nats
import nats.errors
import pytest

from services.supervisor import Fabric
from shared.api_keys import bearer
from shared.nats_server import free_port
from shared.settings import Settings
from tests.support.api import RecordingApi

README = Path(__file__).resolve().parent.parent / "README.md"


def runtime_example() -> str:
    section = README.read_text().split("## A runtime in", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None
    return match.group(1)


async def test_the_readmes_runtime_signs_in_places_a_call_and_hears_its_result(
    tmp_path: Path, api: RecordingApi
) -> None:
    api.reply("POST", "/book", json={"booked": True})
    registry = free_port()
    # The example reads .midcall/ in its working directory, as after `midcall up` there.
    settings = Settings(data_dir=tmp_path / ".midcall")
    fabric = Fabric(
        settings,
        {
            "MIDCALL_ALLOW_DESTINATIONS": "127.0.0.1",
            "MIDCALL_REGISTRY_PORT": str(registry),
            "MIDCALL_BILLING_PORT": str(free_port()),
            "MIDCALL_LOG_LEVEL": "WARNING",
        },
    )
    await fabric.start()
    try:
        # The embedded server lets no one in unsigned.
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await nats.connect(fabric.nats_url, allow_reconnect=False)
        tool = {
            "name": "BookAppointment",
            "parameters": {"type": "object", "properties": {"date": {}, "time": {}}},
            "request": {"url": f"{api.url}/book", "method": "POST"},
        }
        async with httpx.AsyncClient(headers=bearer(fabric.admin_key)) as http:
            added = await http.post(
                f"http://127.0.0.1:{registry}/v1/agents/salon-bot/tools", json={"tools": [tool]}
            )
            assert added.status_code == 201, added.text
        example = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            runtime_example(),
            cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(example.communicate(), 60)
    finally:
        await fabric.stop()

    assert example.returncode == 0, err.decode()
    printed = out.decode().splitlines()
    assert printed[0] == "pending None"
    assert printed[1] == "result {'booked': True}"
    assert "'status': 'success'" in printed[2]
    assert len(api.received) == 1
