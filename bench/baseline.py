"""The floor Midcall is compared with: the same calls, made directly with httpx.

The same client stack the executor uses (httpx over aiohttp's pool), in the
bench process, with enough connections for every call of the burst at once.
"""

import logging
import time

import httpx
from httpx_aiohttp import AiohttpTransport

from bench import load
from bench.figures import Baseline, Burst, Loop
from bench.plan import BODY, Plan
from bench.stats import latency

log = logging.getLogger("bench.baseline")
HEADERS = {"Content-Type": "application/json"}
MAX_CONNECTIONS = 20_000


class DirectCaller:
    """POSTs the arguments; each call's latency in ms, or None if it failed."""

    def __init__(self, client: httpx.AsyncClient, url: str) -> None:
        self.client = client
        self.url = url
        self.failed = 0

    async def __call__(self, _: int) -> float | None:
        started = time.perf_counter()
        try:
            response = await self.client.post(self.url, content=BODY, headers=HEADERS)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            self.failed += 1
            log.warning("baseline call failed: %r", exc)
            return None
        return (time.perf_counter() - started) * 1000


async def measure(plan: Plan, api_url: str) -> Baseline:
    limits = httpx.Limits(
        max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_CONNECTIONS
    )
    # The burst's timeout bounds every request: a request's own is no tighter than the phase's.
    timeout = httpx.Timeout(plan.at_once_timeout_s)
    async with httpx.AsyncClient(
        transport=AiohttpTransport(limits=limits), timeout=timeout
    ) as client:
        fast = DirectCaller(client, f"{api_url}/slots")
        await load.one_at_a_time(fast, plan.warmup)
        sequential, _ = await load.one_at_a_time(fast, plan.one_at_a_time)
        loops = [await _loop(fast, plan.loop_calls, n) for n in plan.in_flight]
        delayed = DirectCaller(client, f"{api_url}/delayed?delay_s={plan.delay_s}")
        _, wall_s = await load.at_once(delayed, plan.at_once)
    return Baseline(
        one_at_a_time=latency([ms for ms in sequential if ms is not None]),
        loops=loops,
        burst=Burst(plan.at_once, plan.delay_s, wall_s),
        failed=fast.failed + delayed.failed,
    )


async def _loop(call: DirectCaller, calls: int, in_flight: int) -> Loop:
    samples, elapsed = await load.closed_loop(call, calls, in_flight)
    kept = [ms for ms in samples if ms is not None]
    return Loop(in_flight, calls, calls / elapsed, latency(kept).p99_ms)
