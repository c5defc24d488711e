"""Midcall on a 3-node JetStream cluster: a server list, and every stream and bucket in
as many replicas as MIDCALL_STREAM_REPLICAS says, moved there by setup."""

from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
import pytest_asyncio

from shared.fabric.broker import build_broker, connect, create_streams
from shared.fabric.jetstream import BUCKETS, STREAMS
from shared.fabric.nats_cluster import Cluster, start_cluster
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
