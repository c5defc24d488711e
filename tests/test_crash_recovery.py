"""A service process killed mid-call: the call still ends, soon enough for a phone line."""

import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from services.demo.runtime import Runtime
from services.supervisor import Fabric
from shared.fabric.nats_server import free_port
from shared.fabric.pull_flow import Durable
from shared.security.api_keys import bearer
from shared.settings import Settings
from tests.support.api import RecordingApi
from tests.support.fabric import SECRETS
from tests.support.processes import up
from tests.test_spine import AGENT, booking_tool, new_call

API_DELAY_S = 1.0
DEADLINE_S = 2.0
ACK_WAIT_S = Durable("s", "s", "d").ack_wait_s


@pytest.fixture
async def processes(tmp_path: Path, nats_url: str) -> AsyncIterator[tuple[Fabric, str]]:
    """Every service in its own process, as `midcall up` runs them."""
    registry = free_port()
    fabric = up(
        Settings(data_dir=tmp_path, nats_url=nats_url),
        registry,
        env={f"MIDCALL_SECRET_{name}": value for name, value in SECRETS.items()},
    )
    await fabric.start()
    yield fabric, f"http://127.0.0.1:{registry}"
    await fabric.stop()


@pytest.mark.parametrize("killed", ["http-executor", "result-injector"])
async def test_a_call_held_by_a_killed_service_ends_within_seconds(
    processes: tuple[Fabric, str], nats_url: str, api: RecordingApi, killed: str
) -> None:
    fabric, registry = processes
    api.reply("POST", "/book", json={"success": True, "stylist_name": "Ana"}, delay_s=API_DELAY_S)
    async with httpx.AsyncClient(headers=bearer(fabric.admin_key)) as http:
        added = await http.post(
            f"{registry}/v1/agents/{AGENT}/tools", json={"tools": [booking_tool(api.url)]}
        )
        assert added.status_code == 201, added.text
    runtime = await Runtime.connect(nats_url)
    call = new_call(deadline_ms=30_000)
    await runtime.listen(call["conversation_id"])

    await runtime.call(call)
    await api.wait_for(1)  # the executor holds the call, waiting on the API
    killed_at = time.monotonic()
    await fabric.restart(killed)
    result = await runtime.wait_for(call["conversation_id"], "result", call["call_id"], 20.0)
    waited = time.monotonic() - killed_at
    await runtime.close()

    assert result["status"] == "success"
    # Redelivered after one ack wait, then the API's own time again at most.
    assert waited < ACK_WAIT_S + API_DELAY_S + 3.0


async def test_a_call_held_by_a_frozen_executor_times_out_at_its_deadline_and_only_once(
    processes: tuple[Fabric, str], nats_url: str, api: RecordingApi
) -> None:
    fabric, registry = processes
    api.reply("POST", "/book", json={"success": True}, delay_s=2 * DEADLINE_S)
    async with httpx.AsyncClient(headers=bearer(fabric.admin_key)) as http:
        added = await http.post(
            f"{registry}/v1/agents/{AGENT}/tools", json={"tools": [booking_tool(api.url)]}
        )
        assert added.status_code == 201, added.text
    runtime = await Runtime.connect(nats_url)
    call = new_call(deadline_ms=int(DEADLINE_S * 1000))
    conversation = call["conversation_id"]
    await runtime.listen(conversation)
    placed_at = time.monotonic()
    await runtime.call(call)
    await api.wait_for(1)
    # Frozen mid-call (a starved VM): its heartbeats stop, and no executor is left.
    fabric.pause("http-executor", paused=True)
    try:
        result = await runtime.wait_for(conversation, "result", call["call_id"], 10.0)
        answered_after = time.monotonic() - placed_at
    finally:
        fabric.pause("http-executor", paused=False)

    assert result["error"]["code"] == "timeout"
    assert result["error"]["details"] == {"timeout_s": DEADLINE_S}
    # The timer fires half a second after the deadline, nats-server up to 0.25 s late.
    assert DEADLINE_S <= answered_after < DEADLINE_S + 1.5
    # Thawed, the executor ends the call itself; that second answer is not published.
    sentinel = new_call(conversation_id=conversation, deadline_ms=30_000)
    api.reply("POST", "/book", json={"success": True})
    await runtime.call(sentinel)
    await runtime.wait_for(conversation, "result", sentinel["call_id"], 20.0)
    await runtime.close()
    results = [
        e
        for e in runtime.events[conversation]
        if e["_kind"] == "result" and e["call_id"] == call["call_id"]
    ]
    assert len(results) == 1
