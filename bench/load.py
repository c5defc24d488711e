"""The three ways the benchmark drives calls, shared by the baseline and Midcall.

A call is any ``async (index) -> sample`` function, so both sides are driven
identically and their figures compare: one at a time, a closed loop holding
``in_flight`` calls outstanding, and all of them at once.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

Sample = TypeVar("Sample")
Call = Callable[[int], Awaitable[Sample]]


async def one_at_a_time(call: Call[Sample], calls: int) -> tuple[list[Sample], float]:
    """Each call after the last one ended; the samples and the seconds it took."""
    started = time.perf_counter()
    samples = [await call(index) for index in range(calls)]
    return samples, time.perf_counter() - started


async def closed_loop(call: Call[Sample], calls: int, in_flight: int) -> tuple[list[Sample], float]:
    """Each of ``in_flight`` workers starts a call as soon as its last one ended."""
    indices = iter(range(calls))  # shared: each index is taken by exactly one worker
    samples: list[Sample] = []

    async def worker() -> None:
        for index in indices:
            samples.append(await call(index))

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return samples, time.perf_counter() - started


async def at_once(call: Call[Sample], calls: int) -> tuple[list[Sample], float]:
    """Every call started together; the seconds until the last one ended."""
    started = time.perf_counter()
    samples = await asyncio.gather(*(call(index) for index in range(calls)))
    return list(samples), time.perf_counter() - started
