"""How fast a runtime hears back: pending latency and the fabric's overhead on results.

Starts the real fabric (`midcall up`'s processes and an embedded nats-server
in a temporary directory), an API on loopback that answers at once, and plays
calls as a runtime would. Prints, for sequential calls: time to pending, time
to result, and the result's overhead (time to result minus the executor's own
HTTP time); then a burst with many calls in flight.
Run: python -m bench.pending_latency [sequential] [burst] [in_flight]
(BENCH_SAMPLED=0: runtime traces unsampled.)
"""

import asyncio
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.stats import summary
from services.demo.runtime import Runtime, new_traceparent
from services.demo.salon_api import SalonApi
from services.demo.script import SECRET_NAME, tools
from services.supervisor import Fabric, free_port
from shared.settings import Settings

AGENT = "bench"
# BENCH_SAMPLED=0 sends unsampled traceparents: what tracing costs is the difference.
SAMPLED = os.environ.get("BENCH_SAMPLED", "1") != "0"


async def _call(runtime: Runtime, conversation: str) -> tuple[float, float, float]:
    call_id = secrets.token_hex(6)
    call = {
        "call_id": call_id,
        "conversation_id": conversation,
        "agent_id": AGENT,
        "tool": "CheckAvailability",
        "arguments": {"date": "2026-11-28", "service": "Haircut"},
    }
    sent = time.perf_counter()
    traceparent = new_traceparent()[0]
    await runtime.call(call, traceparent if SAMPLED else traceparent[:-2] + "00")
    pending = await runtime.wait_for(conversation, "pending", call_id)
    result = await runtime.wait_for(conversation, "result", call_id)
    assert result["status"] == "success", result
    to_pending = (pending["_received"] - sent) * 1000
    to_result = (result["_received"] - sent) * 1000
    return to_pending, to_result, to_result - result["duration_ms"]


async def _run(sequential: int, burst: int, in_flight: int, data_dir: Path) -> None:
    api_key = secrets.token_hex(8)
    salon = SalonApi(api_key)
    api_url = await salon.start()
    registry_port = free_port()
    settings = Settings(data_dir=data_dir)
    fabric = Fabric(
        settings,
        extra_env={
            f"MIDCALL_SECRET_{SECRET_NAME}": api_key,
            "MIDCALL_ALLOW_DESTINATIONS": "127.0.0.1",
            "MIDCALL_REGISTRY_PORT": str(registry_port),
            "MIDCALL_BILLING_PORT": str(free_port()),
            "MIDCALL_LOG_LEVEL": "WARNING",
        },
    )
    await fabric.start()
    try:
        async with httpx.AsyncClient() as http:
            response = await http.post(
                f"http://127.0.0.1:{registry_port}/v1/agents/{AGENT}/tools",
                json={"tools": tools(api_url)},
            )
            response.raise_for_status()
        runtime = await Runtime.connect(fabric.nats_url)
        await _measure(runtime, sequential, burst, in_flight)
        await runtime.close()
    finally:
        await fabric.stop()
        await salon.stop()


async def _measure(runtime: Runtime, sequential: int, burst: int, in_flight: int) -> None:
    conversation = f"bench-{secrets.token_hex(4)}"
    await runtime.listen(conversation)
    for _ in range(10):  # warm-up: imports, pools, tokenizer
        await _call(runtime, conversation)
    samples = [await _call(runtime, conversation) for _ in range(sequential)]
    print(f"sequential, {sequential} calls")
    print(f"  to pending:       {summary([s[0] for s in samples])}")
    print(f"  to result:        {summary([s[1] for s in samples])}")
    print(f"  result overhead:  {summary([s[2] for s in samples])}")
    gate = asyncio.Semaphore(in_flight)

    async def one() -> Any:
        async with gate:
            return await _call(runtime, conversation)

    started = time.perf_counter()
    results = await asyncio.gather(*(one() for _ in range(burst)))
    elapsed = time.perf_counter() - started
    print(f"burst, {burst} calls, {in_flight} in flight: {burst / elapsed:.0f} calls/s")
    print(f"  to pending:       {summary([r[0] for r in results])}")
    print(f"  to result:        {summary([r[1] for r in results])}")


def main() -> None:
    sequential, burst, in_flight = (int(a) for a in ([*sys.argv[1:], "200", "1000", "64"])[:3])
    with tempfile.TemporaryDirectory() as data_dir:
        asyncio.run(_run(sequential, burst, in_flight, Path(data_dir)))


if __name__ == "__main__":
    main()
