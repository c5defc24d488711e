"""Midcall on a 3-node JetStream cluster: a server list, every stream and bucket in as
many replicas as MIDCALL_STREAM_REPLICAS says, moved there by setup, and work that waits
on a leader going on as soon as JetStream announces one."""

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import nats
import nats.errors
import pytest
import pytest_asyncio
from nats.aio.msg import Msg
from nats.js.api import PubAck, StreamConfig
from nats.js.errors import BadRequestError

from shared.contract import subjects
from shared.contract.subjects import USAGE_STREAM as USAGE
from shared.fabric import pull_flow
from shared.fabric.broker import build_broker, connect, create_streams
from shared.fabric.jetstream import BUCKETS, NO_SUITABLE_PEERS, STREAMS, ensure
from shared.fabric.nats_cluster import Cluster, cluster_nodes, start_cluster
from shared.fabric.outages import patiently
from shared.fabric.pull_flow import Durable, PullFlow
from shared.settings import Settings

NAMES = [str(stream.name) for stream in STREAMS] + [f"KV_{bucket.bucket}" for bucket in BUCKETS]


pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def running(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    cluster = await start_cluster(tmp_path_factory.mktemp("cluster"))
    yield cluster
    await cluster.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def cluster(running: Cluster) -> Cluster:
    """The cluster, with no stream or bucket yet."""
    client = await nats.connect(running.url.split(","))
    try:
        for name in await client.jetstream().streams_info():
            await client.jetstream().delete_stream(name.config.name or "")
    finally:
        await client.close()
    return running


async def replicas(cluster: Cluster) -> dict[str, tuple[int, int]]:
    """Each stream's and bucket's replicas as set, and as the cluster placed them."""
    client = await nats.connect(cluster.url.split(","))
    try:
        js = client.jetstream()
        found = {}
        for name in NAMES:
            info = await js.stream_info(name)
            placed = 1 + len(info.cluster.replicas or []) if info.cluster else 1
            found[name] = (info.config.num_replicas or 1, placed)
        return found
    finally:
        await client.close()


async def test_setup_takes_a_server_list_and_makes_every_stream_and_bucket_r3(
    cluster: Cluster,
) -> None:
    await create_streams(Settings(nats_url=cluster.url, stream_replicas=3))

    assert await replicas(cluster) == {name: (3, 3) for name in NAMES}


async def test_setup_moves_a_deployment_to_the_new_count_of_replicas(cluster: Cluster) -> None:
    await create_streams(Settings(nats_url=cluster.url))
    before = await replicas(cluster)

    await create_streams(Settings(nats_url=cluster.url, stream_replicas=3))

    assert before == {name: (1, 1) for name in NAMES}
    assert await replicas(cluster) == {name: (3, 3) for name in NAMES}


class Heard(logging.Handler):
    """Set once a record saying ``words`` is logged."""

    def __init__(self, words: str) -> None:
        super().__init__()
        self.words = words
        self.heard = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.words in record.getMessage():
            self.heard.set()


async def test_setup_waits_for_a_node_the_cluster_cannot_place_copies_on_yet(
    tmp_path: Path,
) -> None:
    # Two of three nodes: JetStream has a meta leader, and no third node for a third copy.
    nodes = cluster_nodes(tmp_path)
    refused_again = Heard("cannot place every copy")
    logging.getLogger("midcall.jetstream").addHandler(refused_again)
    try:
        await asyncio.gather(*(asyncio.to_thread(node.start) for node in nodes[:2]))
        client = await nats.connect(nodes[0].url)
        js = client.jetstream()
        probe = StreamConfig(name="PROBE", subjects=["probe"], num_replicas=3)
        with pytest.raises(BadRequestError) as refused:
            await patiently(partial(js.add_stream, probe), 30)
        assert refused.value.err_code == NO_SUITABLE_PEERS

        setup = asyncio.create_task(ensure(js, replicas=3))
        async with asyncio.timeout(10):
            await refused_again.heard.wait()
        assert not setup.done()
        nodes[2].start()  # the node setup waits for
        async with asyncio.timeout(30):
            await setup
        info = await js.stream_info(subjects.CALLS_STREAM)
        await client.close()
    finally:
        logging.getLogger("midcall.jetstream").removeHandler(refused_again)
        await asyncio.gather(*(node.astop() for node in nodes))

    assert info.config.num_replicas == 3


async def test_a_service_connects_through_a_server_list(cluster: Cluster, tmp_path: Path) -> None:
    settings = Settings(nats_url=f" {cluster.url} ,", stream_replicas=3, data_dir=tmp_path)
    broker = build_broker(settings, "dispatcher")
    try:
        client, js = await connect(broker, settings)
        # An open server: the service made the streams, in as many replicas as set.
        stored = await js.publish("midcall.usage.acme", b"{}", stream="MIDCALL_USAGE")
        info = await js.stream_info("MIDCALL_USAGE")
        connected = client.connected_url
    finally:
        await broker.stop()

    assert connected is not None
    assert f"{connected.hostname}:{connected.port}" in cluster.url
    assert stored.seq == 1
    assert info.config.num_replicas == 3


async def test_a_try_waiting_on_a_stream_goes_on_as_soon_as_it_elects_a_leader(
    cluster: Cluster, tmp_path: Path
) -> None:
    settings = Settings(nats_url=cluster.url, stream_replicas=3, data_dir=tmp_path)
    broker = build_broker(settings, "dispatcher")
    tries = 0
    try:
        client, js = await connect(broker, settings)  # a service: it hears elections
        stepped_down = asyncio.Event()

        async def attempt() -> PubAck:
            nonlocal tries
            tries += 1
            if tries == 1:
                raise nats.errors.NoRespondersError  # the stream's leader is gone
            if tries == 2:
                # As sent to a stream with no leader: never answered. JetStream elects
                # one (a step-down here, at once) and announces it.
                await client.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{USAGE}", b"", timeout=5)
                stepped_down.set()
                await asyncio.Event().wait()
            return await js.publish("midcall.usage.acme", b"{}", stream=USAGE)

        # Each try after a failed one could wait 30 s for its answer: the election ends it.
        async with asyncio.timeout(10):
            stored = await patiently(attempt, 60, retry_s=30)
    finally:
        await broker.stop()

    assert stepped_down.is_set()
    assert tries == 3
    assert stored.stream == USAGE


async def test_a_pull_flow_asks_its_consumers_new_leader_at_once(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without the election heard, a refused request is asked again in 30 s, and the flow's
    # own tick and heartbeats are as far apart.
    monkeypatch.setattr(pull_flow, "REFUSED_RETRY_S", 30.0)
    monkeypatch.setattr(pull_flow, "HEARTBEAT_S", 30.0)
    monkeypatch.setattr(pull_flow, "PULL_EXPIRES_S", 120.0)
    await create_streams(Settings(nats_url=cluster.url, stream_replicas=3))
    client = await nats.connect(cluster.url.split(","))
    received: asyncio.Queue[Msg] = asyncio.Queue()
    durable = Durable(USAGE, "midcall.usage.>", "elections-heard")
    flow = PullFlow(client, durable, received.put_nowait, lambda: 10, 10)
    try:
        await flow.start(max_ack_pending=10)
        js = client.jetstream()
        await js.publish("midcall.usage.acme", b"before", stream=USAGE)
        async with asyncio.timeout(10):
            await (await received.get()).ack()

        stepdown = f"$JS.API.CONSUMER.LEADER.STEPDOWN.{USAGE}.{durable.name}"
        answer = json.loads((await client.request(stepdown, b"", timeout=5)).data)
        await js.publish("midcall.usage.acme", b"after", stream=USAGE)
        async with asyncio.timeout(10):
            after = await received.get()
    finally:
        await flow.stop()
        await client.close()

    assert answer.get("success"), answer
    assert after.data == b"after"
