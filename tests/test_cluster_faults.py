"""Calls on a 3-node R3 cluster while a stream's leader dies: each gets one result.

Stored once each: a publish whose confirmation was lost in the election is sent again
with its Nats-Msg-Id, and the stream keeps one copy. A core subscriber hears each
publish as it is made, so it may hear such an event twice (the contract says so: a
runtime that must never act twice reads through a consumer, as the SDK does)."""

import asyncio
import json
from collections import defaultdict
from pathlib import Path

from nats.js.api import DeliverPolicy

from shared.contract import subjects
from shared.fabric.broker import create_streams
from shared.fabric.nats_cluster import start_cluster
from shared.fabric.nats_server import NatsServer
from shared.settings import Settings
from tests.support.api import RecordingApi
from tests.support.fabric import Fabric, start_fabric, stop_fabric
from tests.test_spine import AGENT, booking_tool, events_of, new_call

CALLS = 30


async def test_calls_in_flight_when_the_work_streams_leader_dies_each_get_one_result(
    tmp_path: Path, api: RecordingApi
) -> None:
    cluster = await start_cluster(tmp_path / "cluster")
    await create_streams(Settings(nats_url=cluster.url, stream_replicas=3))
    fabric = await start_fabric(
        cluster.url, tmp_path / "data", f"sqlite:///{tmp_path / 'f.db'}", stream_replicas=3
    )
    try:
        api.reply("POST", "/book", json={"success": True}, delay_s=1.0)
        await fabric.register(AGENT, booking_tool(api.url, timeout_s=30.0))
        calls = [new_call(deadline_ms=40_000) for _ in range(CALLS)]
        for call in calls:
            await fabric.runtime.listen(call["conversation_id"])
            await fabric.runtime.call(call)
        await api.wait_for(CALLS // 2, timeout_s=20)
        placed = (await fabric.nc.jetstream().stream_info(subjects.WORK_STREAM)).cluster
        assert placed is not None
        leader = placed.leader
        victim = next(n for n in cluster.nodes if n.node is not None and n.node.name == leader)
        victim.kill()
        await asyncio.sleep(5)
        port = int(victim.url.rsplit(":", 1)[1])
        revived = NatsServer(victim.data_dir, port=port, node=victim.node, sync_always=True)
        await asyncio.to_thread(revived.start)
        cluster.nodes[cluster.nodes.index(victim)] = revived
        results = [
            await fabric.runtime.wait_for(c["conversation_id"], "result", c["call_id"], 60)
            for c in calls
        ]
        stored = await stored_events(fabric)
    finally:
        await stop_fabric(fabric)
        await cluster.stop()

    assert [r["status"] for r in results] == ["success"] * CALLS
    assert [stored[c["call_id"]] for c in calls] == [["pending", "result"]] * CALLS
    # A core subscriber may hear an event twice, never two different results of a call.
    for call in calls:
        heard = [e for e in events_of(fabric, call) if e["_kind"] == "result"]
        assert len({json.dumps(e, sort_keys=True) for e in heard}) == 1, heard


async def stored_events(fabric: Fabric) -> dict[str, list[str]]:
    """Each call's events as MIDCALL_CONV keeps them, in order."""
    js = fabric.nc.jetstream()
    subscription = await js.subscribe(
        subjects.ALL_CONV,
        stream=subjects.CONV_STREAM,
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.ALL,
    )
    stored: dict[str, list[str]] = defaultdict(list)
    try:
        while True:
            msg = await subscription.next_msg(timeout=5)
            stored[json.loads(msg.data)["call_id"]].append(msg.subject.rsplit(".", 1)[1])
            if not msg.metadata.num_pending:
                return stored
    finally:
        await subscription.unsubscribe()
