"""A JetStream cluster of nats-server processes on loopback, as production runs NATS: for
the tests, the benchmarks and the cluster fault test (``NatsServer`` is each node)."""

import asyncio
import functools
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from shared.fabric.nats_server import ClusterNode, NatsServer, free_port

READY_TIMEOUT_S = 20.0
MONITOR_TIMEOUT_S = 2.0


@dataclass
class Cluster:
    nodes: list[NatsServer]

    @property
    def url(self) -> str:
        """Every node, comma-separated, as MIDCALL_NATS_URL takes them."""
        return ",".join(node.url for node in self.nodes)

    def named(self, name: str) -> NatsServer:
        return next(node for node in self.nodes if node.node is not None and node.node.name == name)

    async def stop(self) -> None:
        await asyncio.gather(*(node.astop() for node in self.nodes))


async def start_cluster(root: Path, size: int = 3, authorization: str = "") -> Cluster:
    """``size`` nodes routed to one another, once JetStream has its meta leader; each
    node's files in ``root/n<index>``. ``authorization`` as ``NatsServer`` takes it: the
    same users and accounts on every node."""
    cluster = Cluster(cluster_nodes(root, size, authorization))
    try:
        await asyncio.gather(*(asyncio.to_thread(node.start) for node in cluster.nodes))
        await _jetstream_ready(cluster)
    except BaseException:
        await cluster.stop()
        raise
    return cluster


def cluster_nodes(root: Path, size: int = 3, authorization: str = "") -> list[NatsServer]:
    """The nodes of a cluster, not started, as ``start_cluster`` describes them."""
    routes = [free_port() for _ in range(size)]
    return [
        NatsServer(
            root / f"n{index}",
            authorization=authorization,
            node=ClusterNode(f"n{index}", port, tuple(p for p in routes if p != port), free_port()),
            sync_always=True,
        )
        for index, port in enumerate(routes)
    ]


async def monitoring(node: NatsServer, endpoint: str, **query: str) -> dict[str, Any]:
    """One of the node's monitoring reports: ``jsz`` (the meta leader it knows, and with
    ``accounts``/``streams`` each stream's copy on this node and its leader), ``connz``..."""
    assert node.node is not None
    url = f"http://127.0.0.1:{node.node.monitor_port}/{endpoint}"
    async with httpx.AsyncClient(timeout=MONITOR_TIMEOUT_S, verify=_tls()) as http:
        answer = await http.get(url, params=query)
        answer.raise_for_status()
        report: dict[str, Any] = answer.json()
        return report


@functools.cache
def _tls() -> ssl.SSLContext:
    # Made once: a client made without one loads the CA bundle (20 to 94 ms of CPU here),
    # and the cluster fault test asks each node for a report several times a second.
    return ssl.create_default_context()


async def _jetstream_ready(cluster: Cluster) -> None:
    # Asked of the monitoring port: no user of the servers' own is needed.
    async with asyncio.timeout(READY_TIMEOUT_S):
        while True:
            reports = await asyncio.gather(*(monitoring(node, "jsz") for node in cluster.nodes))
            if _meta_whole([report.get("meta_cluster", {}) for report in reports]):
                return
            await asyncio.sleep(0.1)  # no meta leader elected yet, or a node not yet in


def _meta_whole(metas: list[dict[str, Any]]) -> bool:
    """Whether every node knows the meta leader, and the leader knows every other node as
    current: before then a stream with a copy on each node may be refused ("no suitable
    peers for placement, peer offline")."""
    leaders = {meta.get("leader") for meta in metas}
    if len(leaders) != 1 or None in leaders:
        return False
    # The leader's own report is the one that does not list it among its peers.
    for meta in metas:
        peers = meta.get("replicas", [])
        if all(peer.get("name") != meta["leader"] for peer in peers):
            return len(peers) == len(metas) - 1 and all(peer.get("current") for peer in peers)
    return False
