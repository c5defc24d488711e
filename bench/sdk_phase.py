"""The SDK's cost to a runtime: ``bench.sdk_cost``'s two variants, each in a process of its
own, in turn for a few rounds against the fabric the other phases ran on."""

import asyncio
import json
import logging
import statistics
import sys
from typing import TYPE_CHECKING, Any

from bench.figures import SdkCost, Target

if TYPE_CHECKING:
    from bench.midcall import Driver

log = logging.getLogger("bench.sdk")
ROUNDS = 3
IN_FLIGHT = 16
VARIANTS = ("raw", "sdk")
# The bound: the SDK's CPU over the raw runtime's, per call.
OVERHEAD_MS = 0.2


async def measure(driver: "Driver") -> SdkCost:
    calls = driver.plan.sdk_calls
    log.info("sdk: %d rounds of %d calls, raw nats-py and the SDK in turn", ROUNDS, calls)
    measured: dict[str, list[dict[str, Any]]] = {variant: [] for variant in VARIANTS}
    for _ in range(ROUNDS):
        for variant in VARIANTS:
            measured[variant].append(await _run(driver, variant, calls))
    raw, sdk = (statistics.median(m["cpu_ms_per_call"] for m in measured[v]) for v in VARIANTS)
    lost = sum(m["lost"] for runs in measured.values() for m in runs)
    driver.losses.no_result += lost
    target = Target.at_most("SDK over raw, CPU ms/call", OVERHEAD_MS, sdk - raw)
    return SdkCost(calls, IN_FLIGHT, ROUNDS, raw, sdk, lost, target)


async def _run(driver: "Driver", variant: str, calls: int) -> dict[str, Any]:
    options = json.dumps(driver.fabric.runtime_options())
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.sdk_cost",
        variant,
        driver.fabric.nats_url,
        options,
        str(calls),
        str(IN_FLIGHT),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await child.communicate()
    if child.returncode != 0:
        raise RuntimeError(f"bench.sdk_cost {variant} exited {child.returncode}")
    measured: dict[str, Any] = json.loads(out)
    return measured
