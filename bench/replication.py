"""What a confirmed JetStream publish costs at R1 and at R3: the figure that decides how far
one NATS deployment carries Midcall (docs/scaling.md).

Every Midcall hop is a publish awaited until JetStream confirms it. This
publishes 500-byte messages (a work item's size) to a stream and awaits each
ack, one at a time (latency) and with 64 outstanding (throughput), on:
one server as ``midcall up`` runs it; one server with ``sync_interval:
always`` (an ack means "on disk"); and a 3-node cluster on loopback (each node
syncing always) at R1 and at R3. It also reports nats-server's CPU per
message, summed over the nodes. ``python -m bench.replication [--messages N]``
prints a table and writes it as JSON.
"""

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import nats
from nats.js.api import StorageType, StreamConfig

from bench.procstats import cpu_s
from bench.stats import latency
from shared.fabric.nats_cluster import start_cluster
from shared.fabric.nats_server import NatsServer

BODY = b"x" * 500
IN_FLIGHT = 64


@dataclass(frozen=True)
class Row:
    setup: str
    replicas: int
    p50_ms: float | None
    p99_ms: float | None
    msgs_per_s: float
    server_cpu_us_per_msg: float


@asynccontextmanager
async def single(root: Path, sync_always: bool) -> AsyncIterator[tuple[str, list[int]]]:
    server = NatsServer(root, sync_always=sync_always)
    await asyncio.to_thread(server.start)
    try:
        yield server.url, [server.pid]
    finally:
        await server.astop()


@asynccontextmanager
async def cluster(root: Path) -> AsyncIterator[tuple[str, list[int]]]:
    running = await start_cluster(root)
    try:
        yield running.url, [node.pid for node in running.nodes]
    finally:
        await running.stop()


async def measure(url: str, pids: list[int], setup: str, replicas: int, messages: int) -> Row:
    client = await nats.connect(url.split(","))
    try:
        js = client.jetstream()
        name = f"BENCH_R{replicas}"
        await js.add_stream(
            StreamConfig(
                name=name,
                subjects=[f"bench.r{replicas}"],
                storage=StorageType.FILE,
                num_replicas=replicas,
            )
        )
        subject = f"bench.r{replicas}"
        for _ in range(200):  # warm up: the leader is elected, files are open
            await js.publish(subject, BODY, timeout=10)
        samples = []
        for _ in range(messages):
            started = time.perf_counter()
            await js.publish(subject, BODY, timeout=10)
            samples.append((time.perf_counter() - started) * 1000)
        cpu_before = sum(cpu_s(pid) for pid in pids)
        started = time.perf_counter()
        remaining = iter(range(messages * 4))

        async def publisher() -> None:
            for _ in remaining:
                await js.publish(subject, BODY, timeout=10)

        await asyncio.gather(*(publisher() for _ in range(IN_FLIGHT)))
        took = time.perf_counter() - started
        cpu = sum(cpu_s(pid) for pid in pids) - cpu_before
        sequential = latency(samples)
        return Row(
            setup,
            replicas,
            sequential.p50_ms,
            sequential.p99_ms,
            round(messages * 4 / took),
            round(cpu / (messages * 4) * 1e6, 1),
        )
    finally:
        await client.close()


async def run(messages: int) -> list[Row]:
    rows = []
    with tempfile.TemporaryDirectory() as root:
        async with single(Path(root) / "default", sync_always=False) as (url, pids):
            rows.append(await measure(url, pids, "one server (midcall up)", 1, messages))
        async with single(Path(root) / "synced", sync_always=True) as (url, pids):
            rows.append(await measure(url, pids, "one server, sync always", 1, messages))
        async with cluster(Path(root) / "cluster") as (url, pids):
            for replicas in (1, 3):
                rows.append(await measure(url, pids, "3-node cluster", replicas, messages))
    return rows


def table(rows: list[Row]) -> str:
    lines = [
        f"{'confirmed publish, 500 B':<34}{'R':>3}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'msg/s @64':>11}{'server CPU us/msg':>19}"
    ]
    for row in rows:
        lines.append(
            f"{row.setup:<34}{row.replicas:>3}{row.p50_ms or 0:>9.3f}{row.p99_ms or 0:>9.3f}"
            f"{row.msgs_per_s:>11,.0f}{row.server_cpu_us_per_msg:>19.1f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--json", type=Path, default=Path("bench-replication.json"))
    args = parser.parse_args()
    rows = asyncio.run(run(args.messages))
    print(table(rows))
    args.json.write_text(json.dumps([asdict(row) for row in rows], indent=2))
    sys.exit(0)


if __name__ == "__main__":
    main()
