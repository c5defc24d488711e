"""The cluster fault test: calls at a steady rate on a 3-node JetStream cluster, every
stream and bucket R3, while its nodes die, freeze and lose their disks.

Three nats-server processes on loopback form one cluster (routes, ``sync_interval:
always``, the users and accounts ``midcall up`` runs with); two replicas of each hot
service and the registry and billing on PostgreSQL, each process connecting to the
nodes in its own random order. While calls are placed, in turn:

- the meta leader is SIGKILLed, then the leader of ``MIDCALL_CALLS``, of
  ``MIDCALL_WORK`` and of the claims bucket, each restarted after ``down_s``;
- the node leading ``MIDCALL_CONV`` is cut off (SIGSTOP: its routes and clients
  hear nothing) for ``cut_off_s``;
- an executor is frozen past its work items' ack wait, so that they go to the
  other replica, and wakes up;
- one node is SIGKILLed, its JetStream directory deleted, and started again: it
  must catch up from the others.
Each fault also waits until every node is healthy again (``/healthz``): R3 outlives
one node's loss at a time.

Then the fault test's figures (bench/fault.py), and the cluster's own: whether the
three nodes hold the same state of every stream (``/jsz``), how long the wiped node
took to catch up, and how the services' connections spread over the nodes.

Full version: python -m bench.fault_cluster (50 calls/s for about 100 s); the suite
runs a smaller one (tests/test_fault_cluster.py).
"""

import argparse
import asyncio
import contextlib
import logging
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.api import ApiProcess
from bench.fabric import running
from bench.fault import Counts, began_at, fault_before, report, under_fire
from bench.postgres import fresh_schema
from services.dispatcher.app import DURABLE as DISPATCHER
from services.http_executor.main import DURABLE as EXECUTOR_WORK
from services.result_injector.app import DURABLE as INJECTOR
from services.supervisor import Fabric
from shared.contract import subjects
from shared.fabric.nats_cluster import Cluster, monitoring
from shared.fabric.nats_server import NatsServer

log = logging.getLogger("bench.fault_cluster")
NODES = 3
# The streams whose leaders are killed, after the meta leader's.
LED = (
    subjects.CALLS_STREAM,
    subjects.WORK_STREAM,
    subjects.kv_stream(subjects.CALL_CLAIMS_BUCKET),
)
CUT_OFF = subjects.CONV_STREAM  # the node leading it is cut off
# The streams a call goes through (and their consumers): the elections it waits for.
CALL_PATH = {
    subjects.CALLS_STREAM,
    subjects.CONV_STREAM,
    subjects.TIMERS_STREAM,
    subjects.WORK_STREAM,
    subjects.kv_stream(subjects.CALL_CLAIMS_BUCKET),
}
FROZEN = "http-executor-2"
# Past the executors' ack wait: their work items go to the other replica meanwhile.
FROZEN_S = EXECUTOR_WORK.ack_wait_s + 3.0
# The durables a call goes through: the calls a fault held up went through once none has
# messages left to deliver or in hand (``caught_up``).
CALL_DURABLES = {
    (durable.stream, durable.name) for durable in (DISPATCHER, EXECUTOR_WORK, INJECTOR)
}
LEADER_TIMEOUT_S = 30.0
# How often every node is asked what it leads.
ELECTIONS_POLL_S = 0.2
CATCH_UP_TIMEOUT_S = 60.0
POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


@dataclass
class ClusterCounts(Counts):
    # Streams whose state differs between nodes once everything settled.
    nodes_differ: list[str] = field(default_factory=list)
    wiped_caught_up_s: float = 0.0
    # Each fault's wait, past its time, for the cluster to heal from the one before and the
    # calls that one held up to go through.
    healing_s: list[float] = field(default_factory=list)
    # Client connections on each node at the end (services, the test's own).
    connections: dict[str, int] = field(default_factory=dict)
    # After each fault: seconds until every replicated stream and consumer it left without
    # a leader had one again (nats-server's elections), beside ``longest_wait_after``; and
    # the group elected last.
    led_again_after: dict[str, float] = field(default_factory=dict)
    led_last: dict[str, str] = field(default_factory=dict)
    # Every group each fault left leaderless: (group, seen leaderless, led again), seconds
    # from the fault.
    leaderless_after: dict[str, list[tuple[str, float, float]]] = field(default_factory=dict)
    # After each fault: seconds until every group on a call's path (``CALL_PATH``) was led
    # again, and from then until the calls it caught were answered (``answered_after``):
    # what nats-server's elections took, and what Midcall took after them.
    path_led_again_after: dict[str, float] = field(default_factory=dict)
    drained_after_elections: dict[str, float] = field(default_factory=dict)

    def broken(self) -> bool:
        return super().broken() or bool(self.nodes_differ)


async def leaders(cluster: Cluster) -> dict[str, str]:
    """Each stream's leader, and the meta leader (as ``""``), as a live node reports them."""
    for node in cluster.nodes:
        try:
            report = await monitoring(node, "jsz", accounts="true", streams="true")
        except httpx.HTTPError:
            continue  # down, or cut off
        led = {
            stream["name"]: stream.get("cluster", {}).get("leader", "")
            for account in report.get("account_details", [])
            for stream in account.get("stream_detail", [])
        }
        return {**led, "": report.get("meta_cluster", {}).get("leader", "")}
    return {}


class Elections:
    """Which streams and consumers have a leader, polled from every node while the faults
    last: a group is led while a node says it leads it (a killed or cut-off leader leads
    nothing), and each fault's elections end when every group it left leaderless is led
    again. A node that is up but too busy to answer in time says nothing either way."""

    def __init__(self, cluster: Cluster, faults: "Faults") -> None:
        self.cluster = cluster
        self.faults = faults
        # Since when each group has had no leader (unix time), and each such gap once
        # it ended: (found leaderless, led again, group).
        self.leaderless: dict[str, float] = {}
        self.gaps: list[tuple[float, float, str]] = []

    async def follow(self) -> None:
        """Until cancelled."""
        known: set[str] = set()
        while True:
            claims = await asyncio.gather(*(self._claimed(n) for n in self.cluster.nodes))
            at = time.time()
            led = set().union(*(claimed for claimed in claims if claimed is not None))
            # A group no node claims is leaderless only if every node said what it leads.
            if None not in claims:
                for group in known - led:
                    self.leaderless.setdefault(group, at)
            for group in led & self.leaderless.keys():
                self.gaps.append((self.leaderless.pop(group), at, group))
            known |= led
            await asyncio.sleep(ELECTIONS_POLL_S)

    def after(self, faults: list[str]) -> dict[str, list[tuple[str, float, float]]]:
        """Per fault, each group it left leaderless: seen leaderless and led again, in
        seconds from the fault, the last led again last."""
        began = began_at(faults)
        gaps: dict[str, list[tuple[str, float, float]]] = defaultdict(list)
        for lost, found, group in self.gaps:
            fault = fault_before(lost, faults)
            if fault in began:
                since = (round(lost - began[fault], 2), round(found - began[fault], 2))
                gaps[fault].append((group, *since))
        return {fault: sorted(groups, key=lambda gap: gap[2]) for fault, groups in gaps.items()}

    async def _claimed(self, node: NatsServer) -> set[str] | None:
        """The replicated streams and consumers (``stream/consumer``) this node says it
        leads; None: it is up but did not answer in time."""
        if node is self.faults.cut_off:
            return set()
        try:
            report = await monitoring(
                node, "jsz", accounts="true", streams="true", consumers="true"
            )
        except httpx.TimeoutException:
            return None
        except httpx.HTTPError:
            return set()  # down: it leads nothing
        name = _name(node)

        def leads(group: dict[str, Any]) -> bool:
            # A single copy (a runtime's ordered consumer) has no election: it waits for
            # its node.
            cluster = group.get("cluster", {})
            return cluster.get("leader") == name and bool(cluster.get("replicas"))

        led = set()
        for account in report.get("account_details", []):
            for stream in account.get("stream_detail", []):
                if leads(stream):
                    led.add(stream["name"])
                consumers = stream.get("consumer_detail") or []
                led |= {f"{stream['name']}/{c['name']}" for c in consumers if leads(c)}
        return led


async def leader_of(cluster: Cluster, stream: str) -> NatsServer:
    """The node leading ``stream`` (``""``: the meta layer), once one is elected."""
    async with asyncio.timeout(LEADER_TIMEOUT_S):
        while True:
            if name := (await leaders(cluster)).get(stream):
                return cluster.named(name)
            await asyncio.sleep(0.2)  # an election under way


async def stream_states(node: NatsServer) -> dict[str, tuple[int, int, int]]:
    """Each stream's messages, first and last sequence in this node's copy."""
    report = await monitoring(node, "jsz", accounts="true", streams="true")
    return {
        stream["name"]: (
            stream["state"]["messages"],
            stream["state"]["first_seq"],
            stream["state"]["last_seq"],
        )
        for account in report.get("account_details", [])
        for stream in account.get("stream_detail", [])
    }


async def differing(cluster: Cluster) -> list[str]:
    """Streams whose copies differ between the nodes (or are missing on one)."""
    states = [await stream_states(node) for node in cluster.nodes]
    names = set().union(*states)
    return sorted(name for name in names if len({str(s.get(name)) for s in states}) > 1)


async def converged(cluster: Cluster, timeout_s: float) -> tuple[list[str], float]:
    """Until every node holds the same state of every stream: what still differs at the
    end, and how long it took."""
    started = time.monotonic()
    while True:
        differ = await differing(cluster)
        took = time.monotonic() - started
        if not differ or took > timeout_s:
            return differ, round(took, 1)
        await asyncio.sleep(0.5)


async def healed(cluster: Cluster, timeout_s: float) -> None:
    """Once every node says it is healthy (``/healthz``: JetStream up, its copy of every
    stream and consumer current)."""
    async with asyncio.timeout(timeout_s):
        while True:
            if all(await asyncio.gather(*(_healthy(node) for node in cluster.nodes))):
                return
            await asyncio.sleep(0.1)  # asked of nats-server: there is nothing to wait on


async def caught_up(cluster: Cluster, timeout_s: float) -> None:
    """Once no durable on a call's path has messages left to deliver, and every message
    each had delivered by then is acked, as its leader says: the calls a fault held up
    went through. Delivered is not enough: a work item in an executor's hand when the
    next fault froze that executor waited for both (a call placed as a cut-off node woke
    was stored 7 s later, in hand 0.8 s after that when its executor froze, and answered
    13.2 s after it was placed)."""
    async with asyncio.timeout(timeout_s):
        progress = await _until(cluster, lambda now: not any(left for left, _, _ in now.values()))
        delivered = {durable: last for durable, (_, last, _) in progress.items()}
        await _until(
            cluster,
            lambda now: all(acked >= delivered[durable] for durable, (_, _, acked) in now.items()),
        )


# Per durable on the call path: messages it has yet to deliver, the stream sequence of the
# last it delivered, and of the last below which every one is acked.
Progress = dict[tuple[str, str], tuple[int, int, int]]


async def _until(cluster: Cluster, done: Callable[[Progress], bool]) -> Progress:
    while True:
        progress = await _progress(cluster)
        if progress is not None and done(progress):
            return progress
        await asyncio.sleep(0.1)  # asked of nats-server: there is nothing to wait on


async def _progress(cluster: Cluster) -> Progress | None:
    """The call path's durables' ``Progress``; None: not every one has a leader that
    answered (only a leader's figures are current)."""
    progress = {}
    for node in cluster.nodes:
        try:
            report = await monitoring(
                node, "jsz", accounts="true", streams="true", consumers="true"
            )
        except httpx.HTTPError:
            continue
        for account in report.get("account_details", []):
            for stream in account.get("stream_detail", []):
                for consumer in stream.get("consumer_detail") or []:
                    durable = (stream["name"], consumer["name"])
                    led = consumer.get("cluster", {}).get("leader") == _name(node)
                    if durable in CALL_DURABLES and led:
                        progress[durable] = (
                            consumer["num_pending"],
                            consumer["delivered"]["stream_seq"],
                            consumer["ack_floor"]["stream_seq"],
                        )
    return progress if progress.keys() == CALL_DURABLES else None


async def _healthy(node: NatsServer) -> bool:
    try:
        await monitoring(node, "healthz")
    except httpx.HTTPError:  # not answering, or 503 while a copy catches up
        return False
    return True


class Faults:
    def __init__(self, fabric: Fabric, every_s: float, down_s: float, cut_off_s: float) -> None:
        assert fabric.cluster is not None
        self.fabric = fabric
        self.cluster = fabric.cluster
        self.every_s = every_s
        self.down_s = down_s
        self.cut_off_s = cut_off_s
        self.done: list[str] = []
        self.wiped: NatsServer | None = None
        self.cut_off: NatsServer | None = None  # the node stopped now, if one is
        # How long each fault waited, past ``every_s``, for the cluster to heal.
        self.healing_s: list[float] = []

    def _note(self, what: str) -> None:
        self.done.append(f"{time.time():.3f} {what}")
        log.warning("%s", what)

    async def inject(self) -> list[str]:
        for stream in ("", *LED):
            await self._next()
            node = await leader_of(self.cluster, stream)
            await self._kill(node, f"the leader of {stream or 'the meta layer'}")
        await self._next()
        node = await leader_of(self.cluster, CUT_OFF)
        self._note(f"SIGSTOP {_name(node)} (leading {CUT_OFF}) for {self.cut_off_s:g} s")
        self.cut_off = node
        node.pause(True)
        await asyncio.sleep(self.cut_off_s)
        node.pause(False)
        self.cut_off = None
        await self._next()
        self._note(f"SIGSTOP {FROZEN} for {FROZEN_S:g} s")
        self.fabric.pause(FROZEN, True)
        await asyncio.sleep(FROZEN_S)
        self.fabric.pause(FROZEN, False)
        await self._next()
        self.wiped = await leader_of(self.cluster, subjects.CALLS_STREAM)
        await self._kill(self.wiped, "the leader of MIDCALL_CALLS, its store wiped,", wipe=True)
        return self.done

    async def _next(self) -> None:
        """``every_s`` after the last fault, and not before the cluster healed from it and
        the calls it held up went through: R3 outlives one node's loss at a time, not a
        second one while a node that came back is still catching up (its streams would
        have no quorum), and a call caught by two faults waits for both."""
        await asyncio.sleep(self.every_s)
        started = time.monotonic()
        await healed(self.cluster, LEADER_TIMEOUT_S)
        await caught_up(self.cluster, LEADER_TIMEOUT_S)
        self.healing_s.append(round(time.monotonic() - started, 1))

    async def _kill(self, node: NatsServer, what: str, wipe: bool = False) -> None:
        self._note(f"SIGKILL {_name(node)}: {what} back in {self.down_s:g} s")
        node.kill()
        if wipe:
            shutil.rmtree(node.data_dir / "jetstream")
        await asyncio.sleep(self.down_s)
        await asyncio.to_thread(node.start)


def _name(node: NatsServer) -> str:
    return node.node.name if node.node is not None else node.url


async def connections(cluster: Cluster) -> dict[str, int]:
    return {
        _name(node): int((await monitoring(node, "connz"))["num_connections"])
        for node in cluster.nodes
    }


async def run(args: argparse.Namespace) -> ClusterCounts:
    api = ApiProcess()
    api_url = api.start()
    try:
        with (
            tempfile.TemporaryDirectory() as data_dir,
            fresh_schema(args.postgres) as database_url,
        ):
            async with running(
                Path(data_dir), replicas=2, nats_nodes=NODES, database_url=database_url
            ) as bench:
                assert bench.fabric.cluster is not None
                faults = Faults(bench.fabric, args.every, args.down, args.cut_off)
                elections = Elections(bench.fabric.cluster, faults)
                following = asyncio.create_task(elections.follow())
                try:
                    counts = await under_fire(bench, api_url, args.calls, args.rate, faults.inject)
                finally:
                    following.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await following
                elected = elections.after(counts.faults)
                path_led, drained = after_elections(counts.answered_after, elected)
                if args.logs is not None:
                    keep_logs(bench.fabric.cluster, args.logs)
                differ, took = await converged(bench.fabric.cluster, CATCH_UP_TIMEOUT_S)
                return ClusterCounts(
                    **asdict(counts),
                    nodes_differ=differ,
                    wiped_caught_up_s=took,
                    healing_s=faults.healing_s,
                    connections=await connections(bench.fabric.cluster),
                    led_again_after={fault: gaps[-1][2] for fault, gaps in elected.items()},
                    led_last={fault: gaps[-1][0] for fault, gaps in elected.items()},
                    leaderless_after=elected,
                    path_led_again_after=path_led,
                    drained_after_elections=drained,
                )
    finally:
        api.stop()


def after_elections(
    answered: dict[str, float], elected: dict[str, list[tuple[str, float, float]]]
) -> tuple[dict[str, float], dict[str, float]]:
    """``path_led_again_after`` and ``drained_after_elections`` of each fault that left a
    group on the call path without a leader."""
    led: dict[str, float] = {}
    for fault, gaps in elected.items():
        on_path = [found for group, _, found in gaps if group.split("/")[0] in CALL_PATH]
        if on_path:
            led[fault] = max(on_path)
    drained = {
        fault: round(answered[fault] - took, 2) for fault, took in led.items() if fault in answered
    }
    return led, drained


def keep_logs(cluster: Cluster, to: Path) -> None:
    """Each node's nats-server log (its elections, when it stepped down and why), copied
    out of the run's temporary directory."""
    to.mkdir(parents=True, exist_ok=True)
    for node in cluster.nodes:
        shutil.copyfile(node.data_dir / "nats-server.log", to / f"{_name(node)}.log")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fault_cluster", description=__doc__)
    parser.add_argument("--calls", type=int, default=4500, help="at least; more while faults last")
    parser.add_argument("--rate", type=float, default=50.0, help="calls a second")
    parser.add_argument("--every", type=float, default=8.0, help="seconds between faults")
    parser.add_argument("--down", type=float, default=5.0, help="seconds a killed node stays down")
    parser.add_argument("--cut-off", type=float, default=10.0, help="seconds a node is cut off")
    parser.add_argument("--postgres", default=POSTGRES_URL, help="PostgreSQL to run on")
    parser.add_argument("--json", type=Path, default=Path("bench/fault_cluster.json"))
    parser.add_argument("--logs", type=Path, help="keep each node's nats-server log here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    return report(asyncio.run(run(args)), args.json)


if __name__ == "__main__":
    sys.exit(main())
