"""What a progress and a cancel add to a call, per process, in one run.

Three closed loops of their own at ``IN_FLIGHT``, the CPU of every process
read around each (its deadline timers included, as the HTTP loops count
them):

- ``plain``: the fast HTTP tool, the loops' call, at the same concurrency;
- ``progress``: its API answers 202, then reports one progress and completes
  through the call's callbacks (the registry takes both);
- ``cancel``: its API reports one progress and holds the request; the runtime
  cancels the call as that progress comes, the executor aborts the request
  and tells the tool's ``on_cancel``.

A progress call must succeed and have its progress heard, a cancelled one
end ``cancelled``; any other end is counted as not a success.
"""

import logging
from functools import partial
from typing import TYPE_CHECKING, Any

import httpx

from bench import load
from bench.fabric import wait_timers_fired
from bench.figures import PathCost
from bench.plan import AGENT, FAST_TIMEOUT_S, FAST_TOOL, tools
from bench.procstats import CpuSnapshot
from bench.runtime import Outcome
from shared.contract.errors import ErrorCode

if TYPE_CHECKING:
    from bench.midcall import Driver

log = logging.getLogger("bench.paths")
IN_FLIGHT = 32
PROGRESS_TOOL = "CheckSlotsLater"
CANCEL_TOOL = "HoldSlot"
REASON = "the caller hung up"


def path_tools(api_url: str) -> list[dict[str, Any]]:
    """The fast tool's twins on the long-running APIs (``bench.api``)."""
    fast = tools(api_url, 0)[0]
    request = fast["request"]
    return [
        {
            **fast,
            "name": PROGRESS_TOOL,
            "request": {**request, "url": f"{api_url}/later", "callback_timeout_s": FAST_TIMEOUT_S},
        },
        {
            **fast,
            "name": CANCEL_TOOL,
            "request": {
                **request,
                "url": f"{api_url}/held",
                "on_cancel": {"url": f"{api_url}/held/cancel"},
            },
        },
    ]


def ended_well(path: str, outcome: Outcome) -> bool:
    """Whether the call ended as its path's calls should."""
    if path == "cancel":
        return outcome.code == ErrorCode.CANCELLED
    heard = path == "plain" or outcome.progress_ms is not None
    return outcome.status == "success" and heard


async def measure(driver: "Driver") -> list[PathCost]:
    await driver.fabric.add_tools(AGENT, *path_tools(driver.api_url))
    timeout_s = driver.plan.result_timeout_s
    calls = {
        "plain": driver.caller(FAST_TOOL, timeout_s),
        "progress": driver.caller(PROGRESS_TOOL, timeout_s),
        "cancel": driver.caller(CANCEL_TOOL, timeout_s, cancel=REASON),
    }
    # Until the dispatchers' catalog has both tools (one write), then the paths' pools.
    await driver.until_callable(calls["progress"])
    for call in calls.values():
        await driver.metered(partial(load.one_at_a_time, call, driver.plan.warmup))
    measured = [await _loop(driver, path, call) for path, call in calls.items()]
    async with httpx.AsyncClient() as http:
        told = (await http.get(f"{driver.api_url}/held/told")).json()["told"]
    log.info("paths: on_cancel told of %d cancelled calls, warm-up included", told)
    return measured


async def _loop(driver: "Driver", path: str, call: load.Call[Outcome]) -> PathCost:
    calls = driver.plan.path_calls
    log.info("paths: %d %s calls, %d in flight", calls, path, IN_FLIGHT)
    before = CpuSnapshot.take(driver.pids)
    run = await driver.metered(lambda: load.closed_loop(call, calls, IN_FLIGHT))
    await wait_timers_fired(driver.js, FAST_TIMEOUT_S + driver.plan.result_timeout_s)
    cpu = before.ms_per_call(CpuSnapshot.take(driver.pids), calls)
    unexpected = sum(not ended_well(path, outcome) for outcome in run.outcomes)
    lost = sum(outcome.lost for outcome in run.outcomes)
    driver.losses.no_result += lost
    driver.losses.not_success += unexpected - lost
    return PathCost(
        path,
        calls,
        IN_FLIGHT,
        cpu,
        sum(ms for name, ms in cpu.items() if driver.role(name) == "service"),
        sum(ms for name, ms in cpu.items() if driver.role(name) == "nats"),
        unexpected,
    )
