"""What the SDK costs a runtime per call, against a raw nats-py runtime placing the same calls.

Each variant runs in a process of its own, so the CPU it reports is its own
and nothing else's: ``python -m bench.sdk_cost raw|sdk URL OPTIONS CALLS
IN_FLIGHT`` warms up, places ``CALLS`` calls of the fast HTTP tool with
``IN_FLIGHT`` at once, and prints ``{"cpu_ms_per_call", "lost"}``.

- ``raw``: one connection, one core subscription on every conversation, a
  JetStream publish per call and a future per result (``BenchRuntime``, the
  README's example made to carry many calls);
- ``sdk``: ``MidcallClient``, one connection and one ordered consumer,
  ``call()`` then ``pending()`` and ``result()``.
"""

import asyncio
import json
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench import load
from bench.plan import AGENT, FAST_TOOL, arguments
from bench.runtime import BenchRuntime
from midcall.client import CallFailed, Credentials, MidcallClient

RESULT_TIMEOUT_S = 30.0
WARMUP = 50
RUN = secrets.token_hex(4)
Place = Callable[[int], Awaitable[bool]]  # call ``index``: whether it had its result


async def measure(place: Place, calls: int, in_flight: int) -> dict[str, Any]:
    await load.closed_loop(place, WARMUP, in_flight)
    started = time.process_time()
    had, _ = await load.closed_loop(lambda index: place(WARMUP + index), calls, in_flight)
    spent = time.process_time() - started
    return {"cpu_ms_per_call": spent * 1000 / calls, "lost": had.count(False)}


def conversation(variant: str, index: int) -> str:
    """Calls spread over 64 conversations of this run's own (no call is ever repeated)."""
    return f"{variant}-{RUN}-{index % 64}"


async def raw(url: str, options: dict[str, Any], calls: int, in_flight: int) -> dict[str, Any]:
    runtime = await BenchRuntime.connect(url, AGENT, **options)

    async def place(index: int) -> bool:
        outcome = await runtime.call(
            FAST_TOOL, conversation("raw", index), arguments(index), RESULT_TIMEOUT_S
        )
        return not outcome.lost

    try:
        return await measure(place, calls, in_flight)
    finally:
        await runtime.close()


async def sdk(url: str, options: dict[str, Any], calls: int, in_flight: int) -> dict[str, Any]:
    credentials = Credentials(options["user"], options["password"], options["inbox_prefix"])
    async with MidcallClient(url, credentials) as mc:

        async def place(index: int) -> bool:
            call = await mc.call(AGENT, conversation("sdk", index), FAST_TOOL, arguments(index))
            try:
                async with asyncio.timeout(RESULT_TIMEOUT_S):
                    await call.pending()
                    await call.result()
            except CallFailed:
                return True  # an answer all the same: the fabric's, not the client's
            except TimeoutError:
                return False
            return True

        return await measure(place, calls, in_flight)


VARIANTS = {"raw": raw, "sdk": sdk}


def main(argv: list[str]) -> int:
    variant, url, options, calls, in_flight = argv
    measured = asyncio.run(VARIANTS[variant](url, json.loads(options), int(calls), int(in_flight)))
    print(json.dumps(measured))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
