"""A nats-server restart (a deploy, a crash) must not leave dispatchers on a stale catalog."""

import asyncio
from pathlib import Path

import httpx

from shared.fabric.nats_server import NatsServer
from tests.support.api import RecordingApi
from tests.support.fabric import Fabric, start_fabric, stop_fabric
from tests.test_fabric_behaviour import result_within_a_second
from tests.test_spine import AGENT, booking_tool, new_call, place


async def register_when_back(fabric: Fabric, tool: dict[str, object]) -> None:
    """The registry answers 503 while NATS is away; a client retries, bounded."""
    async with asyncio.timeout(15):
        while True:
            try:
                response = await fabric.registry.post(
                    f"/v1/agents/{AGENT}/tools", json={"tools": [tool]}
                )
            except httpx.TransportError:
                response = None
            if response is not None and response.status_code == 201:
                return
            await asyncio.sleep(0.2)


async def test_tool_changes_reach_dispatchers_after_nats_restarts(
    tmp_path: Path, api: RecordingApi
) -> None:
    api.reply("POST", "/v1", json={"version": 1})
    api.reply("POST", "/v2", json={"version": 2})
    server = NatsServer(tmp_path / "nats")
    url = server.start()
    fabric = await start_fabric(url, tmp_path, f"sqlite:///{tmp_path / 'fabric.db'}")
    try:
        await fabric.register(AGENT, booking_tool(api.url, url=f"{api.url}/v1"))
        assert (await place(fabric, new_call()))["result"] == {"version": 1}

        await server.astop()
        server = NatsServer(tmp_path / "nats", port=int(url.rsplit(":", 1)[1]))
        server.start()
        await register_when_back(fabric, booking_tool(api.url, url=f"{api.url}/v2"))

        # Consumers re-pull once their lost pull request expires (1 s), and the catalog
        # is re-read on reconnect: a few seconds after the server is back, not never.
        await result_within_a_second(fabric, lambda r: r["result"] == {"version": 2}, 5.0)
    finally:
        await stop_fabric(fabric)
        await server.astop()
