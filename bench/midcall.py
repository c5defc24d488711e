"""Midcall's figures: the baseline's calls, made through the fabric as a runtime makes them.

Phases run in order on one fabric: warm-up, one call at a time, the closed
loops (CPU per process read around the busiest), python tools (see
``bench.python_phase``), the SDK's cost (``bench.sdk_phase``), progress and
cancel beside a plain call (``bench.progress_cancel``), then every call at
once against the delayed endpoint, last because its deadline timers fire a
minute later. A loop's time ends only when billing has stored every usage
record, so its calls/s is what the whole fabric sustains.
"""

import asyncio
import itertools
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from nats.js import JetStreamContext

from bench import load, progress_cancel, sdk_phase
from bench.fabric import BenchFabric, redeliveries, usage_seq, wait_billed, wait_timers_fired
from bench.figures import Burst, Loop, Losses, Midcall, Process
from bench.plan import ACCOUNT, DELAYED_TOOL, FAST_TIMEOUT_S, FAST_TOOL, Plan, arguments
from bench.procstats import CpuSnapshot, peak_rss_mb
from bench.python_phase import PythonPhases
from bench.runtime import BenchRuntime, Outcome
from bench.stats import latency

log = logging.getLogger("bench.midcall")
# The registry's write reaches the dispatchers' catalog a moment later.
CATALOG_TIMEOUT_S = 15.0
Phase = Callable[[], Awaitable[tuple[list[Outcome], float]]]
Arguments = Callable[[int], dict[str, Any]]


@dataclass(frozen=True)
class Metered:
    """A phase's outcomes, seconds until its last result, and billing's seconds after that."""

    outcomes: list[Outcome]
    results_s: float
    billing_s: float


class Driver:
    def __init__(
        self,
        runtime: BenchRuntime,
        ops: JetStreamContext,
        fabric: BenchFabric,
        plan: Plan,
        api_pid: int,
        api_url: str,
    ) -> None:
        self.runtime = runtime
        self.fabric = fabric
        self.plan = plan
        self.js = ops  # streams' and consumers' state, as an operator reads it
        self.losses = Losses()
        self.pids = {**fabric.pids(), "api": api_pid, "runtime": os.getpid()}
        self.api_url = api_url
        self.turns = itertools.count()
        self.accounts = [ACCOUNT]  # every account a call was made in, for billing's totals

    def caller(
        self,
        tool: str,
        timeout_s: float,
        with_arguments: Arguments = arguments,
        agent_id: str | None = None,
        conversation: str = "bench",
        cancel: str | None = None,
    ) -> load.Call[Outcome]:
        """``cancel``: each call is cancelled with this reason as its first progress comes."""

        async def call(index: int) -> Outcome:
            conversation_id = f"{conversation}-{index % self.plan.conversations}"
            turn = next(self.turns)  # unique across phases: no call is ever repeated
            return await self.runtime.call(
                tool, conversation_id, with_arguments(turn), timeout_s, agent_id, cancel
            )

        return call

    async def measure(self) -> Midcall:
        await self.metered(self._warm_up)
        one = self.counted(await self.metered(self._one_at_a_time)).outcomes
        loops: list[Loop] = []
        cpu: dict[str, float] = {}
        for in_flight in self.plan.in_flight:
            before = CpuSnapshot.take(self.pids)
            loops.append(await self._loop(in_flight))
            # A call's work ends when its deadline timer has fired and been handled.
            await wait_timers_fired(self.js, FAST_TIMEOUT_S + self.plan.result_timeout_s)
            if in_flight == self.plan.measured_in_flight:
                cpu = before.ms_per_call(CpuSnapshot.take(self.pids), self.plan.loop_calls)
        python = await PythonPhases(self).measure()
        sdk = await sdk_phase.measure(self)
        paths = await progress_cancel.measure(self)
        burst = await self._burst()
        billed = await self.fabric.billed_calls(self.accounts)
        self.losses.not_billed = max(0, self.runtime.accepted - billed)
        self.losses.redelivered = await redeliveries(self.js)
        return Midcall(
            replicas=self.plan.replicas,
            pending=latency([o.pending_ms for o in one if o.pending_ms is not None]),
            result=latency([o.result_ms for o in one if o.result_ms is not None]),
            overhead=latency([o.overhead_ms for o in one if o.overhead_ms is not None]),
            loops=loops,
            burst=burst,
            processes=self._processes(cpu),
            losses=self.losses,
            python=python,
            sdk=sdk,
            paths=paths,
        )

    async def metered(self, phase: Phase) -> Metered:
        """Run a phase, then wait until billing has stored the usage of its accepted calls."""
        mark, accepted = await usage_seq(self.js), self.runtime.accepted
        outcomes, results_s = await phase()
        results_at = time.perf_counter()
        await wait_billed(
            self.js, mark, self.runtime.accepted - accepted, self.plan.result_timeout_s
        )
        return Metered(outcomes, results_s, time.perf_counter() - results_at)

    def counted(self, metered: Metered) -> Metered:
        """The phase's losses added to the run's (warm-up calls are not counted)."""
        for outcome in metered.outcomes:
            if outcome.lost:
                self.losses.no_result += 1
                continue
            self.losses.not_success += outcome.status != "success"
            self.losses.no_pending += outcome.pending_ms is None
        return metered

    async def _warm_up(self) -> tuple[list[Outcome], float]:
        """Imports, pools, the tokenizer."""
        fast = self.caller(FAST_TOOL, self.plan.result_timeout_s)
        return await self.warm_up(fast, self.plan.warmup)

    async def warm_up(self, call: load.Call[Outcome], calls: int) -> tuple[list[Outcome], float]:
        """Until a call succeeds (the catalog arrived), then ``calls`` more."""
        await self.until_callable(call)
        return await load.one_at_a_time(call, calls)

    @staticmethod
    async def until_callable(call: load.Call[Outcome]) -> None:
        """Until a call succeeds: the registry's write reached the dispatchers' catalog."""
        give_up_at = time.monotonic() + CATALOG_TIMEOUT_S
        while (await call(0)).status != "success":
            if time.monotonic() > give_up_at:
                raise RuntimeError("the bench tools never became callable")
            await asyncio.sleep(0.1)

    async def _one_at_a_time(self) -> tuple[list[Outcome], float]:
        log.info("midcall: %d calls one at a time", self.plan.one_at_a_time)
        fast = self.caller(FAST_TOOL, self.plan.result_timeout_s)
        return await load.one_at_a_time(fast, self.plan.one_at_a_time)

    async def _loop(self, in_flight: int) -> Loop:
        log.info("midcall: %d calls, %d in flight", self.plan.loop_calls, in_flight)
        calls, fast = self.plan.loop_calls, self.caller(FAST_TOOL, self.plan.result_timeout_s)
        run = self.counted(await self.metered(lambda: load.closed_loop(fast, calls, in_flight)))
        p99 = latency([o.result_ms for o in run.outcomes if o.result_ms is not None]).p99_ms
        return Loop(in_flight, calls, calls / (run.results_s + run.billing_s), p99, run.billing_s)

    async def _burst(self) -> Burst:
        log.info("midcall: %d calls at once, API takes %g s", self.plan.at_once, self.plan.delay_s)
        delayed = self.caller(DELAYED_TOOL, self.plan.at_once_timeout_s)
        run = self.counted(await self.metered(lambda: load.at_once(delayed, self.plan.at_once)))
        return Burst(self.plan.at_once, self.plan.delay_s, run.results_s)

    def _processes(self, cpu_ms_per_call: dict[str, float]) -> list[Process]:
        return [
            Process(name, self.role(name), cpu_ms_per_call[name], peak_rss_mb(pid))
            for name, pid in self.pids.items()
        ]

    @staticmethod
    def role(process: str) -> str:
        """A process of ``pids``: "nats", "api", "runtime" or "service"."""
        # A cluster's nodes are nats-server-n0, nats-server-n1, ...
        if process.startswith("nats-server"):
            return "nats"
        return process if process in ("api", "runtime") else "service"
