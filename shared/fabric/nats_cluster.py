"""A JetStream cluster of nats-server processes on loopback, as production runs NATS: for
the tests, the benchmarks and the cluster fault test (``NatsServer`` is each node)."""

import asyncio
from dataclasses import dataclass
from pathlib import Path

import nats
import nats.errors

from shared.fabric.nats_server import ClusterNode, NatsServer, free_port

READY_TIMEOUT_S = 20.0


@dataclass
class Cluster:
    nodes: list[NatsServer]

    @property
    def url(self) -> str:
        """Every node, comma-separated, as MIDCALL_NATS_URL takes them."""
        return ",".join(node.url for node in self.nodes)

    async def stop(self) -> None:
        await asyncio.gather(*(node.astop() for node in self.nodes))


async def start_cluster(root: Path, size: int = 3) -> Cluster:
    """``size`` nodes routed to one another, once JetStream has its meta leader."""
    routes = [free_port() for _ in range(size)]
    nodes = [
        NatsServer(
            root / f"n{index}",
            node=ClusterNode(f"n{index}", port, tuple(p for p in routes if p != port)),
            sync_always=True,
        )
        for index, port in enumerate(routes)
    ]
    cluster = Cluster(nodes)
    try:
        await asyncio.gather(*(asyncio.to_thread(node.start) for node in nodes))
        await _jetstream_ready(cluster.url)
    except BaseException:
        await cluster.stop()
        raise
    return cluster


async def _jetstream_ready(url: str) -> None:
    client = await nats.connect(url.split(","))
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            while True:
                try:
                    await client.jetstream().account_info()
                    return
                except nats.errors.Error:
                    await asyncio.sleep(0.1)  # no meta leader elected yet
    finally:
        await client.close()
