"""How soon work waiting on a stream goes on once nats-server elects its new leader: with
the process following JetStream's election advisories (as every service does,
shared.fabric.elections) and without.

On a 3-node cluster (each node syncing always), each round makes an R3 stream, kills its
leader's node (SIGKILL), and publishes ``--waiters`` messages through
``outages.patiently``, as the services do, while the stream has no leader. It reports the
election (the kill to the advisory) and how long after the advisory each publish was
confirmed. ``python -m bench.elections [--rounds N]`` prints a table and writes JSON.
"""

import argparse
import asyncio
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import nats
from nats.aio.msg import Msg
from nats.js.errors import BadRequestError

from bench.fault_cluster import LEADER_TIMEOUT_S, healed, leader_of
from shared.fabric import elections
from shared.fabric.nats_cluster import Cluster, start_cluster
from shared.fabric.outages import FIRST_TRY_S, patiently

# Publishes sent once the leader is dead: they wait out the election.
AFTER_KILL_S = 0.5


@dataclass(frozen=True)
class Row:
    following: bool
    rounds: int
    elected_s: float  # median: from the kill to the advisory
    p50_ms: float  # publishes confirmed, after the advisory
    p90_ms: float
    max_ms: float


async def one_round(
    cluster: Cluster, index: int, following: bool, waiters: int
) -> tuple[float, list[float]]:
    """The election's length, and each publish's confirmation after it (seconds)."""
    stream = f"ELECTED_{index}"
    # The node killed last round is back, and the meta leader counts it again.
    await healed(cluster, LEADER_TIMEOUT_S)
    setup = await nats.connect(cluster.url.split(","))
    try:
        async with asyncio.timeout(LEADER_TIMEOUT_S):
            while True:
                try:
                    await setup.jetstream().add_stream(
                        name=stream, subjects=[f"elected.{index}"], num_replicas=3
                    )
                    break
                except BadRequestError:  # "no suitable peers for placement, peer offline"
                    await asyncio.sleep(0.5)
    finally:
        await setup.close()
    victim = await leader_of(cluster, stream)
    # Through the nodes that stay: the connection does not move meanwhile.
    client = await nats.connect([node.url for node in cluster.nodes if node is not victim])
    try:
        js = client.jetstream()
        heard: asyncio.Future[float] = asyncio.get_running_loop().create_future()

        async def elected(_: Msg) -> None:
            if not heard.done():
                heard.set_result(time.monotonic())

        await client.subscribe(elections.stream_elected(stream), cb=elected)
        if following:
            await elections.follow(client)
        killed = time.monotonic()
        victim.kill()
        await asyncio.sleep(AFTER_KILL_S)
        confirmed: list[float] = []

        async def publish(n: int) -> None:
            send = partial(
                js.publish,
                f"elected.{index}",
                b"x" * 500,
                timeout=FIRST_TRY_S,
                headers={"Nats-Msg-Id": str(n)},
            )
            await patiently(send, 60, target=stream)
            confirmed.append(time.monotonic())

        await asyncio.gather(*(publish(n) for n in range(waiters)))
        at = await heard
        return at - killed, [moment - at for moment in confirmed]
    finally:
        await client.close()
        await asyncio.to_thread(victim.start)


async def run(rounds: int, waiters: int) -> list[Row]:
    took: dict[bool, list[float]] = {False: [], True: []}
    after: dict[bool, list[float]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as root:
        cluster = await start_cluster(Path(root))
        try:
            for index in range(rounds * 2):
                following = bool(index % 2)
                election, confirmed = await one_round(cluster, index, following, waiters)
                took[following].append(election)
                after[following].extend(confirmed)
        finally:
            await cluster.stop()
    rows = []
    for following in (False, True):
        waits = sorted(after[following])
        rows.append(
            Row(
                following,
                rounds,
                round(sorted(took[following])[len(took[following]) // 2], 2),
                round(waits[len(waits) // 2] * 1000, 1),
                round(waits[int(len(waits) * 0.9)] * 1000, 1),
                round(waits[-1] * 1000, 1),
            )
        )
    return rows


def table(rows: list[Row]) -> str:
    lines = [
        f"{'a publish waiting on an election':<36}{'rounds':>7}{'election s':>11}"
        f"{'p50 ms':>8}{'p90 ms':>8}{'max ms':>8}"
    ]
    for row in rows:
        how = "following the advisories" if row.following else "trying again only"
        lines.append(
            f"{how:<36}{row.rounds:>7}{row.elected_s:>11.2f}"
            f"{row.p50_ms:>8.1f}{row.p90_ms:>8.1f}{row.max_ms:>8.1f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4, help="kills each way")
    parser.add_argument("--waiters", type=int, default=20, help="publishes waiting each round")
    parser.add_argument("--json", type=Path, default=Path("bench/elections.json"))
    args = parser.parse_args()
    rows = asyncio.run(run(args.rounds, args.waiters))
    print(table(rows))
    args.json.write_text(json.dumps([asdict(row) for row in rows], indent=2))
    sys.exit(0)


if __name__ == "__main__":
    main()
