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
from dataclasses import asdict, dataclass, field
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
from shared.security.nats_auth import RUNTIME_JS_DOMAIN

log = logging.getLogger("bench.fault")
TOOL = "CheckSlotsUnderFire"
CONVERSATIONS = 50
# How long a call may wait for its result once everything is back.
SETTLE_S = 60.0


@dataclass
class Counts:
    calls: int = 0
    lost: int = 0  # no result stored for the call
    stored_twice: int = 0  # more than one result in MIDCALL_CONV for one call
    core_duplicates: int = 0  # results a core subscriber heard more than once
    pending_after_result: int = 0
    not_success: int = 0
    api_executions_beyond_one: int = 0
    billed: int = 0
    accepted: int = 0
    max_wait_beyond_api_s: float = 0.0
    waits_over_10_s: int = 0
    faults: list[str] = field(default_factory=list)
    # For each API execution beyond one: the fault just before it.
    repeated_after: dict[str, int] = field(default_factory=dict)

    def broken(self) -> bool:
        return bool(self.lost or self.stored_twice or self.billed != self.accepted)


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
    give_up = time.monotonic() + SETTLE_S
    while True:
        try:
            await client.jetstream().publish(
                subjects.calls(call["conversation_id"]), body, timeout=2.0, headers=headers
            )
            return
        except (nats.errors.Error, TimeoutError):
            if time.monotonic() > give_up:
                raise
            await asyncio.sleep(0.2)


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
            "conversation_id": f"fault-{index % CONVERSATIONS}",
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


async def stored_results(bench: BenchFabric) -> Counter[str]:
    """Results in MIDCALL_CONV by call id: what a runtime reading the stream would get."""
    client = await nats.connect(bench.nats_url, **bench.runtime_options())
    ops = await bench.ops()
    try:
        js = client.jetstream(domain=RUNTIME_JS_DOMAIN)
        info = await ops.jetstream().stream_info(subjects.CONV_STREAM)
        sub = await js.subscribe(
            subjects.ALL_RESULTS,
            stream=subjects.CONV_STREAM,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.ALL,
        )
        counts: Counter[str] = Counter()
        seen = 0
        while seen < (info.state.messages or 0):
            try:
                msg = await sub.next_msg(timeout=2.0)
            except nats.errors.TimeoutError:
                break
            seen += 1
            if msg.subject.endswith(".result"):
                counts[json.loads(msg.data)["call_id"]] += 1
        return counts
    finally:
        await client.close()
        await ops.close()


async def run(calls: int, rate: float, every_s: float, down_s: float) -> Counts:
    api = ApiProcess()
    api_url = api.start()
    try:
        with tempfile.TemporaryDirectory() as data_dir:
            async with running(Path(data_dir), replicas=2) as bench:
                return await _under_fire(bench, api_url, calls, rate, every_s, down_s)
    finally:
        api.stop()


async def _under_fire(
    bench: BenchFabric, api_url: str, calls: int, rate: float, every_s: float, down_s: float
) -> Counts:
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
        bench.nats_url,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.2,
        **bench.runtime_options(),
    )
    await client.subscribe("midcall.conv.*.>", cb=listener.on_event)
    keys = [key for key in bench.fabric.children if key != "registry"] + ["registry"]
    faults = asyncio.create_task(inject_faults(bench.fabric, keys, every_s, down_s))
    sent = await place_calls(client, rate, calls, faults)
    counts = Counts(calls=len(sent), faults=await faults)
    await _settle(listener, sent)
    await client.close()
    _count_events(counts, listener, sent)
    counts.stored_twice = sum(n > 1 for n in (await stored_results(bench)).values())
    async with httpx.AsyncClient() as http:
        executions = (await http.get(f"{api_url}/executions")).json()
        counts.api_executions_beyond_one = sum(max(0, len(n) - 1) for n in executions.values())
        counts.repeated_after = _repeated_after(executions, counts.faults)
    counts.billed = await bench.billed_calls()
    return counts


def _repeated_after(executions: dict[str, list[float]], faults: list[str]) -> dict[str, int]:
    times = sorted((float(fault.split(" ", 1)[0]), fault.split(" ", 1)[1]) for fault in faults)
    blamed: Counter[str] = Counter()
    for moments in executions.values():
        for moment in sorted(moments)[1:]:
            before = [name for at, name in times if at <= moment]
            blamed[before[-1] if before else "no fault"] += 1
    return dict(blamed)


async def _settle(listener: Listener, sent: dict[str, float]) -> None:
    give_up = time.monotonic() + SETTLE_S
    while time.monotonic() < give_up:
        answered = sum(any(k == "result" for k, *_ in listener.events[c]) for c in sent)
        if answered == len(sent):
            return
        await asyncio.sleep(0.2)


def _count_events(counts: Counts, listener: Listener, sent: dict[str, float]) -> None:
    for call_id, sent_at in sent.items():
        events = listener.events.get(call_id, [])
        kinds = [kind for kind, *_ in events]
        results = [(at, event) for kind, at, event in events if kind == "result"]
        if not results:
            counts.lost += 1
            continue
        counts.accepted += "pending" in kinds
        counts.core_duplicates += len(results) - 1
        counts.pending_after_result += "pending" in kinds and kinds.index("pending") > kinds.index(
            "result"
        )
        at, result = results[0]
        counts.not_success += result["status"] != "success"
        beyond = (at - sent_at) - result.get("duration_ms", 0) / 1000
        counts.max_wait_beyond_api_s = max(counts.max_wait_beyond_api_s, round(beyond, 2))
        counts.waits_over_10_s += beyond > 10


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
    args.json.write_text(json.dumps(asdict(counts), indent=2))
    for name, value in asdict(counts).items():
        print(f"{name:28s} {value}")
    return 1 if counts.broken() else 0


if __name__ == "__main__":
    sys.exit(main())
