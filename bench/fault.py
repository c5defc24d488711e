"""The fault test: calls at a steady rate while every process is killed in turn.

Two replicas each of dispatcher, executor and injector, plus registry and
billing, on an embedded nats-server; an API that answers in 5-200 ms. While
calls are placed, each service process is SIGKILLed and restarted after
``down_s``, nats-server itself is SIGKILLed and restarted, and one executor
is frozen (SIGSTOP) for 5 s. Then it counts, from outside, what the contract
promises: every call answered, one result stored per call, one billed
record per call, pending before result, and how long a fault made anyone wait.

Full version: python -m bench.fault (2,000 calls at 50/s); the suite runs a
smaller one (tests/test_fault.py). Prints the counts and writes them as JSON.
"""

import argparse
import asyncio
import json
import logging
import secrets
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy

from bench.api import ApiProcess
from bench.fabric import BenchFabric, running
from bench.plan import ACCOUNT, AGENT, arguments
from services.demo.runtime import new_traceparent
from services.supervisor import Fabric
from shared.contract import subjects
from shared.fabric.liveness import SILENCE_DETECTION
from shared.fabric.outages import FIRST_TRY_S, patiently
from shared.security.nats_auth import RUNTIME_JS_DOMAIN
from shared.settings import servers

log = logging.getLogger("bench.fault")
TOOL = "CheckSlotsUnderFire"
CONVERSATIONS = 50
# How long a call may wait for its result once everything is back.
SETTLE_S = 60.0
# Long past any fault's effect: no result heard for this long, the rest were missed.
QUIET_S = 20.0
# Calls placed this soon after a fault are the ones it caught in flight.
CAUGHT_S = 1.0


@dataclass
class Counts:
    calls: int = 0
    lost: int = 0  # no result stored for the call
    # Calls whose result a core subscriber never heard (stored all the same): published
    # while its connection moved to another node. The contract: a runtime reads through
    # a consumer to catch up.
    not_heard: int = 0
    stored_twice: int = 0  # more than one result in MIDCALL_CONV for one call
    pendings_stored_twice: int = 0  # more than one pending in MIDCALL_CONV for one call
    core_duplicates: int = 0  # events a core subscriber heard more than once, the same each time
    different_results: int = 0  # calls a core subscriber heard two different results of
    different_pendings: int = 0  # calls a core subscriber heard two different pendings of
    # A core subscriber heard the call's first pending after its result. One server
    # delivers in the order it was given; a cluster's nodes need not (a pending sent
    # through a node that was frozen arrives when it wakes), so there it is counted only.
    pending_after_result: int = 0
    stored_out_of_order: int = 0  # MIDCALL_CONV holds the call's result before its pending
    not_success: int = 0
    api_executions_beyond_one: int = 0
    keys_changed: int = 0  # calls whose repeats at the API carried another Idempotency-Key
    billed: int = 0
    double_billed: int = 0  # calls with more than one usage record
    unbilled: int = 0  # answered calls with no usage record
    accepted: int = 0
    max_wait_beyond_api_s: float = 0.0
    waits_over_10_s: int = 0
    faults: list[str] = field(default_factory=list)
    # The events a core subscriber heard of the first call with two different results,
    # and of the first whose result was not a success.
    different_example: list[dict[str, Any]] = field(default_factory=list)
    failure_example: list[dict[str, Any]] = field(default_factory=list)
    # The call that waited longest, and the slowest placed after each fault: when it was
    # stored, heard each event, reached the API and was answered, in seconds after it was
    # sent (``timeline``).
    slowest: dict[str, Any] = field(default_factory=dict)
    slowest_after: dict[str, dict[str, Any]] = field(default_factory=dict)
    # For each API execution beyond one: the fault just before it.
    repeated_after: dict[str, int] = field(default_factory=dict)
    # The longest wait beyond the API's time of the calls placed after each fault.
    longest_wait_after: dict[str, float] = field(default_factory=dict)
    # Seconds from each fault until the last of the calls placed in its first second was
    # heard answered: what it held up, drained.
    answered_after: dict[str, float] = field(default_factory=dict)

    def broken(self) -> bool:
        """Any of the figures the contract makes zero is not."""
        return bool(
            self.lost
            or self.stored_twice
            or self.pendings_stored_twice
            or self.different_results
            or self.different_pendings
            or self.keys_changed
            or self.double_billed
            or self.unbilled
            or self.not_success
            or self.stored_out_of_order
        )


class Listener:
    """A runtime's core subscription: what each call's events were, and when they came."""

    def __init__(self) -> None:
        self.events: dict[str, list[tuple[str, float, dict[str, Any]]]] = defaultdict(list)

    async def on_event(self, msg: Msg) -> None:
        kind = msg.subject.rsplit(".", 1)[-1]
        if kind in ("pending", "result"):
            event = json.loads(msg.data)
            self.events[event["call_id"]].append((kind, time.monotonic(), event))


async def publish_until_stored(client: Client, call: dict[str, Any]) -> None:
    """As a careful runtime does: the same call, same message id, until JetStream has it."""
    headers = {"Nats-Msg-Id": call["call_id"], "traceparent": new_traceparent()[0]}
    body = json.dumps(call).encode()
    subject = subjects.calls(call["conversation_id"])
    await patiently(
        partial(client.jetstream().publish, subject, body, timeout=FIRST_TRY_S, headers=headers),
        SETTLE_S,
        target=subjects.CALLS_STREAM,
    )


async def place_calls(
    client: Client, rate: float, minimum: int, faults: asyncio.Task[list[str]]
) -> dict[str, float]:
    """Calls paced at ``rate`` a second, at least ``minimum`` and for as long as the faults
    last; the time each was first sent, by call id."""
    sent: dict[str, float] = {}
    tasks = []
    index = 0
    while index < minimum or not faults.done():
        call: dict[str, Any] = {
            "call_id": f"f-{index}-{secrets.token_hex(3)}",
            "conversation_id": _conversation(index),
            "agent_id": AGENT,
            "tool": TOOL,
            "arguments": arguments(index),
        }
        sent[call["call_id"]] = time.monotonic()
        tasks.append(asyncio.create_task(publish_until_stored(client, call)))
        index += 1
        await asyncio.sleep(1 / rate)
    await asyncio.gather(*tasks)
    return sent


def _conversation(index: int) -> str:
    return f"fault-{index % CONVERSATIONS}"


async def inject_faults(
    fabric: Fabric, keys: list[str], every_s: float, down_s: float
) -> list[str]:
    """Each service process killed in turn, nats-server once, one executor frozen once."""
    done: list[str] = []
    for key in keys:
        await asyncio.sleep(every_s)
        done.append(f"{time.time():.3f} SIGKILL {key}")
        await fabric.restart(key, down_s=down_s)
    await asyncio.sleep(every_s)
    done.append(f"{time.time():.3f} SIGKILL nats-server")
    await fabric.restart_nats(down_s=down_s)
    await asyncio.sleep(every_s)
    done.append(f"{time.time():.3f} SIGSTOP http-executor-2 for 5 s")
    fabric.pause("http-executor-2", True)
    await asyncio.sleep(5.0)
    fabric.pause("http-executor-2", False)
    return done


async def stored_events(bench: BenchFabric) -> dict[str, list[str]]:
    """Each call's pendings and results in MIDCALL_CONV, in order: what a runtime reading
    the stream would get."""
    client = await nats.connect(servers(bench.nats_url), **bench.runtime_options())
    ops = await bench.ops()
    try:
        js = client.jetstream(domain=RUNTIME_JS_DOMAIN)
        info = await patiently(partial(ops.jetstream().stream_info, subjects.CONV_STREAM), SETTLE_S)
        # Patiently: on a cluster, a node restarted last may still be catching up.
        sub = await patiently(
            partial(
                js.subscribe,
                subjects.ALL_CONV,
                stream=subjects.CONV_STREAM,
                ordered_consumer=True,
                deliver_policy=DeliverPolicy.ALL,
            ),
            SETTLE_S,
        )
        stored: dict[str, list[str]] = defaultdict(list)
        seen = 0
        while seen < (info.state.messages or 0):
            try:
                msg = await sub.next_msg(timeout=2.0)
            except nats.errors.TimeoutError:
                break
            seen += 1
            stored[json.loads(msg.data)["call_id"]].append(msg.subject.rsplit(".", 1)[1])
        return stored
    finally:
        await client.close()
        await ops.close()


Faults = Callable[[], Coroutine[Any, Any, list[str]]]


async def run(calls: int, rate: float, every_s: float, down_s: float) -> Counts:
    api = ApiProcess()
    api_url = api.start()
    try:
        with tempfile.TemporaryDirectory() as data_dir:
            async with running(Path(data_dir), replicas=2) as bench:
                fabric = bench.fabric
                keys = [key for key in fabric.children if key != "registry"] + ["registry"]
                faults = partial(inject_faults, fabric, keys, every_s, down_s)
                return await under_fire(bench, api_url, calls, rate, faults)
    finally:
        api.stop()


async def under_fire(
    bench: BenchFabric, api_url: str, calls: int, rate: float, faults: Faults
) -> Counts:
    """Calls at ``rate`` a second (at least ``calls``, and while ``faults`` last), then
    what became of each, counted from outside."""
    tool = {
        "name": TOOL,
        "parameters": {"type": "object", "properties": {"date": {"type": "string"}}},
        "request": {"url": f"{api_url}/jittered", "method": "POST", "timeout_s": 30},
        "speech": {"on_send": "One moment."},
    }
    async with bench.rest(bench.registry_url) as http:
        (await http.put(f"/v1/agents/{AGENT}", json={"account_id": ACCOUNT})).raise_for_status()
        (await http.post(f"/v1/agents/{AGENT}/tools", json={"tools": [tool]})).raise_for_status()
    await asyncio.sleep(1.0)  # the registry's write reaches the dispatchers' catalogs
    listener = Listener()
    client = await nats.connect(
        servers(bench.nats_url),
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.2,
        **SILENCE_DETECTION,
        **bench.runtime_options(),
    )
    await client.subscribe("midcall.conv.*.>", cb=listener.on_event)
    injecting = asyncio.create_task(faults())
    sent = await place_calls(client, rate, calls, injecting)
    counts = Counts(calls=len(sent), faults=await injecting)
    await _settle(listener, sent)
    await client.close()
    _count_events(counts, listener, sent)
    stored = await stored_events(bench)
    counts.lost = sum("result" not in stored.get(call, []) for call in sent)
    counts.accepted = sum("pending" in stored.get(call, []) for call in sent)
    counts.stored_twice = sum(kinds.count("result") > 1 for kinds in stored.values())
    counts.pendings_stored_twice = sum(kinds.count("pending") > 1 for kinds in stored.values())
    counts.stored_out_of_order = sum(_pending_after_result(kinds) for kinds in stored.values())
    async with httpx.AsyncClient() as http:
        executions = (await http.get(f"{api_url}/executions")).json()
    counts.api_executions_beyond_one = sum(max(0, len(n) - 1) for n in executions.values())
    counts.keys_changed = sum(len({key for _, key in n}) > 1 for n in executions.values())
    counts.repeated_after = _repeated_after(executions, counts.faults)
    for timeline in (counts.slowest, *counts.slowest_after.values()):
        sent_at = _unix(sent[timeline["call_id"]])
        turn = timeline["call_id"].split("-")[1]  # f-<turn>-<hex>, as place_calls names them
        timeline["api"] = [round(at - sent_at, 2) for at, _ in executions.get(turn, [])]
    answered = [call for call in sent if "result" in stored.get(call, [])]
    billed = await _billed(bench, {_conversation(index) for index in range(len(sent))}, answered)
    counts.billed = sum(billed.values())
    counts.double_billed = sum(n > 1 for n in billed.values())
    counts.unbilled = sum(not billed[call] for call in answered)
    return counts


async def _billed(bench: BenchFabric, conversations: set[str], answered: list[str]) -> Counter[str]:
    """Usage records by call id, as billing answers for each conversation, once every
    answered call is billed or ``SETTLE_S`` passed (billing may still be catching up)."""
    give_up = time.monotonic() + SETTLE_S
    async with bench.rest(bench.billing_url) as http:
        while True:
            billed: Counter[str] = Counter()
            for conversation in sorted(conversations):
                usage = await http.get(
                    f"/v1/usage/conversations/{conversation}", params={"account_id": ACCOUNT}
                )
                if usage.status_code == httpx.codes.NOT_FOUND:
                    continue  # nothing billed there yet
                usage.raise_for_status()
                billed.update(record["call_id"] for record in usage.json()["calls"])
            if all(billed[call] for call in answered) or time.monotonic() > give_up:
                return billed
            await asyncio.sleep(1.0)


def _repeated_after(
    executions: dict[str, list[tuple[float, str]]], faults: list[str]
) -> dict[str, int]:
    blamed: Counter[str] = Counter()
    for reached in executions.values():
        for moment, _ in sorted(reached)[1:]:
            blamed[fault_before(moment, faults)] += 1
    return dict(blamed)


def began_at(faults: list[str]) -> dict[str, float]:
    """When each of ``faults`` (each "<unix time> <what>") began, by what it was."""
    return {what: float(at) for at, what in (fault.split(" ", 1) for fault in faults)}


def fault_before(moment: float, faults: list[str]) -> str:
    """The last of ``faults`` (each "<unix time> <what>") begun by ``moment``."""
    times = sorted((float(fault.split(" ", 1)[0]), fault.split(" ", 1)[1]) for fault in faults)
    before = [name for at, name in times if at <= moment]
    return before[-1] if before else "no fault"


def _answered(listener: Listener, call_id: str) -> bool:
    return any(kind == "result" for kind, *_ in listener.events[call_id])


async def _settle(listener: Listener, sent: dict[str, float]) -> None:
    """Until every call's result was heard, or none for a while (one a core subscriber
    missed is looked for in the stream)."""
    give_up = time.monotonic() + SETTLE_S
    heard, quiet_since = -1, time.monotonic()
    while time.monotonic() < give_up and time.monotonic() - quiet_since < QUIET_S:
        answered = sum(_answered(listener, call) for call in sent)
        if answered == len(sent):
            return
        if answered > heard:
            heard, quiet_since = answered, time.monotonic()
        await asyncio.sleep(0.2)


def _count_events(counts: Counts, listener: Listener, sent: dict[str, float]) -> None:
    began = began_at(counts.faults)
    for call_id, sent_at in sent.items():
        events = listener.events.get(call_id, [])
        kinds = [kind for kind, *_ in events]
        results = [(at, event) for kind, at, event in events if kind == "result"]
        if not results:
            counts.not_heard += 1
            continue
        distinct = {kind: _distinct(events, kind) for kind in ("pending", "result")}
        counts.core_duplicates += len(events) - sum(distinct.values())
        counts.different_results += distinct["result"] > 1
        counts.different_pendings += distinct["pending"] > 1
        if distinct["result"] > 1 and not counts.different_example:
            counts.different_example = [event for *_, event in events]
        counts.pending_after_result += _pending_after_result(kinds)
        at, result = results[0]
        counts.not_success += result["status"] != "success"
        if result["status"] != "success" and not counts.failure_example:
            counts.failure_example = [event for *_, event in events]
        beyond = round((at - sent_at) - result.get("duration_ms", 0) / 1000, 2)
        placed = _unix(sent_at)
        after = fault_before(placed, counts.faults)
        if beyond > counts.max_wait_beyond_api_s:
            counts.slowest = timeline(call_id, beyond, sent_at, events)
        if beyond > counts.longest_wait_after.get(after, 0.0):
            counts.slowest_after[after] = timeline(call_id, beyond, sent_at, events)
        counts.max_wait_beyond_api_s = max(counts.max_wait_beyond_api_s, beyond)
        counts.waits_over_10_s += beyond > 10
        counts.longest_wait_after[after] = max(counts.longest_wait_after.get(after, 0.0), beyond)
        if after in began and placed - began[after] < CAUGHT_S:
            answered = round(_unix(at) - began[after], 2)
            counts.answered_after[after] = max(counts.answered_after.get(after, 0.0), answered)


def timeline(
    call_id: str, beyond: float, sent_at: float, events: list[tuple[str, float, dict[str, Any]]]
) -> dict[str, Any]:
    """Where a call's wait went, in seconds after it was sent: stored (its pending's
    ``at``), each event heard, answered (its result's ``at``); the API's are added later."""
    sent_unix = _unix(sent_at)

    def since_sent(event: dict[str, Any]) -> float:
        return round(datetime.fromisoformat(event["at"]).timestamp() - sent_unix, 2)

    return {
        "call_id": call_id,
        "beyond_api_s": beyond,
        "sent": round(sent_unix, 3),
        "stored": [since_sent(event) for kind, _, event in events if kind == "pending"][:1],
        "heard": [(kind, round(moment - sent_at, 2)) for kind, moment, _ in events],
        "answered": [since_sent(event) for kind, _, event in events if kind == "result"][:1],
    }


def _unix(moment: float) -> float:
    """A ``time.monotonic()`` moment as unix time."""
    return time.time() - (time.monotonic() - moment)


def _pending_after_result(kinds: list[str]) -> bool:
    """Whether the call's first pending came after its first result."""
    if "pending" not in kinds or "result" not in kinds:
        return False
    return kinds.index("pending") > kinds.index("result")


def _distinct(events: list[tuple[str, float, dict[str, Any]]], kind: str) -> int:
    return len({json.dumps(event, sort_keys=True) for k, _, event in events if k == kind})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fault", description=__doc__)
    parser.add_argument("--calls", type=int, default=2000, help="at least; more while faults last")
    parser.add_argument("--rate", type=float, default=50.0, help="calls a second")
    parser.add_argument("--every", type=float, default=3.0, help="seconds between faults")
    parser.add_argument(
        "--down", type=float, default=3.0, help="seconds a killed process stays down"
    )
    parser.add_argument("--json", type=Path, default=Path("bench/fault.json"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    counts = asyncio.run(run(args.calls, args.rate, args.every, args.down))
    return report(counts, args.json)


def report(counts: Counts, to: Path) -> int:
    """Print the figures, keep them as JSON; the exit status says whether any broke."""
    to.write_text(json.dumps(asdict(counts), indent=2))
    for name, value in asdict(counts).items():
        print(f"{name:28s} {value}")
    return 1 if counts.broken() else 0


if __name__ == "__main__":
    sys.exit(main())
