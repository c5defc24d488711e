"""Python tools, on the fabric the HTTP tools have just run on: warm, in a loop, and cold.

1. Warm, one call at a time, after a warm-up: CheckSlots (the HTTP tool),
   its request made by a function (``CheckSlotsInPython``) and a function
   answering at once, in turn, so that each is measured as the machine was
   for the others.
2. The function answering at once, in a closed loop: calls/s (until results
   are in and billing stored every usage record, as the HTTP loops count), and
   the CPU per call of the code-executor and of the jails under it.
3. Accounts' first calls, with the jail registration started and without
   (see ``bench.cold_starts``).
4. Memory: every jail then running, each an account's zygote with its spare.
"""

import logging
from functools import partial
from typing import TYPE_CHECKING

from bench import load, sandboxes
from bench.cold_starts import ColdStartPhase
from bench.fabric import wait_timers_fired
from bench.figures import Loop, PythonTools, SandboxCost, python_targets
from bench.plan import AGENT, FAST_TIMEOUT_S, FAST_TOOL
from bench.python_tools import (
    FAST_PYTHON_TOOL,
    TRIVIAL_TOOL,
    fast_python_tool,
    trivial_arguments,
    trivial_tool,
)
from bench.runtime import Outcome
from bench.sandboxes import TreeCpu
from bench.stats import Latency, latency

if TYPE_CHECKING:
    from bench.midcall import Driver

log = logging.getLogger("bench.python")
SERVICE = "code-executor"


class PythonPhases:
    def __init__(self, driver: "Driver") -> None:
        self.driver = driver
        self.plan = driver.plan
        self.executors = driver.fabric.service_pids(SERVICE)
        self.measured: list[Outcome] = []  # every measured python call, for its own tally

    async def measure(self) -> PythonTools:
        python = [fast_python_tool(self.driver.api_url), trivial_tool()]
        await self.driver.fabric.add_tools(AGENT, *python)
        http, warm, at_once = await self._warm()
        trivial, cpu = await self._trivial_loop()
        cold = await ColdStartPhase(self.driver, self._kept).measure()
        over_p50, over_p99 = _minus(warm.p50_ms, http.p50_ms), _minus(warm.p99_ms, http.p99_ms)
        return PythonTools(
            warm=warm,
            http=http,
            over_http_p50_ms=over_p50,
            over_http_p99_ms=over_p99,
            answering_at_once=at_once,
            trivial=trivial,
            cold=cold,
            cost=self._cost(*cpu),
            calls=len(self.measured),
            not_success=sum(o.status != "success" for o in self.measured if not o.lost),
            lost=sum(o.lost for o in self.measured),
            targets=python_targets(over_p50, over_p99, trivial, cold),
        )

    def _kept(self, outcomes: list[Outcome]) -> list[Outcome]:
        self.measured += outcomes
        return outcomes

    async def _warm(self) -> tuple[Latency, Latency, Latency]:
        """CheckSlots, its function and the trivial one, in turn, one call at a time: each
        call of a turn meets the machine as the others did (a shared machine drifts)."""
        driver, calls = self.driver, self.plan.one_at_a_time
        http = driver.caller(FAST_TOOL, self.plan.result_timeout_s)
        python = driver.caller(FAST_PYTHON_TOOL, self.plan.result_timeout_s)
        trivial = driver.caller(TRIVIAL_TOOL, self.plan.result_timeout_s, trivial_arguments)
        for function in (python, trivial):
            await driver.metered(partial(driver.warm_up, function, self.plan.warmup))
        log.info("python: %d calls one at a time, each beside an HTTP tool's", calls)
        turns = in_turn(http, python, trivial)
        run = driver.counted(await driver.metered(lambda: load.one_at_a_time(turns, 3 * calls)))
        outcomes = run.outcomes
        self._kept(outcomes[1::3] + outcomes[2::3])
        return _results(outcomes[0::3]), _results(outcomes[1::3]), _results(outcomes[2::3])

    def _cost(self, executor_ms: float, sandboxes_ms: float) -> SandboxCost:
        """The loop's CPU per call, and the memory of the jails running now."""
        jails = sandboxes.jails(self.executors)
        return SandboxCost(
            executor_ms,
            sandboxes_ms,
            len(jails),
            sandboxes.median([j.zygote_rss_mb for j in jails]),
            sandboxes.median([j.zygote_pss_mb for j in jails]),
            sandboxes.median([j.jail_pss_mb for j in jails]),
        )

    async def _trivial_loop(self) -> tuple[Loop, tuple[float, float]]:
        driver, calls, in_flight = self.driver, self.plan.loop_calls, self.plan.python_in_flight
        trivial = driver.caller(TRIVIAL_TOOL, self.plan.result_timeout_s, trivial_arguments)
        log.info("python: %d calls of a trivial function, %d in flight", calls, in_flight)
        before = TreeCpu.take(self.executors)
        run = driver.counted(
            await driver.metered(lambda: load.closed_loop(trivial, calls, in_flight))
        )
        # As the HTTP loops: a call's work ends when its deadline timer has fired.
        await wait_timers_fired(driver.js, FAST_TIMEOUT_S + self.plan.result_timeout_s)
        cpu = before.ms_per_call(TreeCpu.take(self.executors), calls)
        p99 = _results(self._kept(run.outcomes)).p99_ms
        calls_per_s = calls / (run.results_s + run.billing_s)
        return Loop(in_flight, calls, calls_per_s, p99, run.billing_s), cpu


def in_turn(*calls: load.Call[Outcome]) -> load.Call[Outcome]:
    """One call made of several: call ``i`` is ``calls[i % n]``'s call ``i // n``."""

    async def call(index: int) -> Outcome:
        return await calls[index % len(calls)](index // len(calls))

    return call


def _results(outcomes: list[Outcome]) -> Latency:
    """Their times to result (of those that had one)."""
    return latency([o.result_ms for o in outcomes if o.result_ms is not None])


def _minus(value: float | None, base: float | None) -> float | None:
    return None if value is None or base is None else value - base
