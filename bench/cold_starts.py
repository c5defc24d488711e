"""A python tool's first calls in an account: with the jail registration started, and without.

Posting a python tool makes a code-executor start the owning account's jail
(the registry asks one whether the sandbox runs), so a new tool's first call
finds it warm. A cold start, a call with no jail running for its account,
comes after the jail idled out (``MIDCALL_SANDBOX_IDLE_S``), after its
code-executor restarted, or when an agent moves to another account, which
the registry does without starting a jail: the benchmark makes the last.

For each of the plan's ``cold_starts`` agents: an account and the agent in it,
with the function and, posted after it, CheckSlots. CheckSlots is called until
it succeeds (the catalog then holds the function too: the registry writes
tools in the order posted), then the function, once and then warm. Then the
agent moves to an account of its own, and CheckSlots is called until billing
counts a call there (the dispatchers know of the move); then the function
again: its first call there starts the jail, the next ones find it warm.

A jail idle for ``MIDCALL_SANDBOX_IDLE_S`` (300 s by default) is stopped:
none is idle that long during a run, so no first call is colder, and no warm
one cold, for it; the jails counted at the end (one per account called) show
that none was stopped.
"""

import asyncio
import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bench import load
from bench.figures import ColdStarts
from bench.plan import FAST_TOOL, tools
from bench.python_tools import COLD_TIMEOUT_S, FAST_PYTHON_TOOL, fast_python_tool
from bench.runtime import Outcome
from bench.stats import latency

if TYPE_CHECKING:
    from bench.midcall import Driver

log = logging.getLogger("bench.python")
WARM_CALLS = 3  # after an account's first call: its warm time to result
MOVE_TIMEOUT_S = 15.0  # the agent's move reaches the dispatchers' catalog


@dataclass(frozen=True)
class Agent:
    agent_id: str
    registered_in: str  # the account its tools were posted in: its jail started then
    moved_to: str  # an account with no jail


@dataclass
class FirstCalls:
    """Accounts' first calls, their warm ones, and by how much each first was slower."""

    first: list[float] = field(default_factory=list)
    warm: list[float] = field(default_factory=list)
    over_warm: list[float] = field(default_factory=list)

    def add(self, outcomes: list[Outcome]) -> None:
        """One account's calls, its first first: only successes are times of a run."""
        times = [o.result_ms if o.status == "success" else None for o in outcomes]
        warm = [ms for ms in times[1:] if ms is not None]
        if times[0] is None or not warm:
            return
        self.first.append(times[0])
        self.warm += warm
        self.over_warm.append(times[0] - statistics.median(warm))


class ColdStartPhase:
    def __init__(self, driver: "Driver", kept: Callable[[list[Outcome]], object]) -> None:
        self.driver = driver
        self.kept = kept  # the measured calls, for the python tools' own tally

    async def measure(self) -> ColdStarts:
        agents = [
            Agent(f"bench-cold-{n}-bot", f"bench-cold-{n}", f"bench-moved-{n}")
            for n in range(self.driver.plan.cold_starts)
        ]
        for agent in agents:
            await self._register(agent)
        log.info("python: first calls in %d accounts, and after a move in as many", len(agents))
        registered, cold = FirstCalls(), FirstCalls()
        for agent in agents:
            await self.driver.until_callable(self._probe(agent.agent_id, agent.registered_in))
            registered.add(await self._calls(agent.agent_id, agent.registered_in))
            await self.driver.fabric.put_agent(agent.agent_id, agent.moved_to)
            await self._until_billed_in(agent.agent_id, agent.moved_to)
            cold.add(await self._calls(agent.agent_id, agent.moved_to))
        return ColdStarts(
            accounts=len(agents),
            registered_first=latency(registered.first),
            first=latency(cold.first),
            warm=latency(cold.warm),
            over_warm=latency(cold.over_warm),
            idle_reap_s=self.driver.fabric.settings.sandbox_idle_s,
        )

    async def _register(self, agent: Agent) -> None:
        fabric, api_url = self.driver.fabric, self.driver.api_url
        for account in (agent.registered_in, agent.moved_to):
            await fabric.add_account(account)
        self.driver.accounts += [agent.registered_in, agent.moved_to]
        await fabric.put_agent(agent.agent_id, agent.registered_in)
        check_slots = tools(api_url, self.driver.plan.delay_s)[0]
        await fabric.add_tools(
            agent.agent_id, fast_python_tool(api_url, COLD_TIMEOUT_S), check_slots
        )

    def _probe(self, agent_id: str, account: str) -> load.Call[Outcome]:
        timeout_s = self.driver.plan.result_timeout_s
        return self.driver.caller(FAST_TOOL, timeout_s, agent_id=agent_id, conversation=account)

    async def _calls(self, agent_id: str, account: str) -> list[Outcome]:
        """The function's first call in ``account``, then its warm ones, one at a time."""
        driver = self.driver
        function = driver.caller(
            FAST_PYTHON_TOOL, COLD_TIMEOUT_S, agent_id=agent_id, conversation=account
        )
        run = driver.counted(
            await driver.metered(lambda: load.one_at_a_time(function, 1 + WARM_CALLS))
        )
        self.kept(run.outcomes)
        return run.outcomes

    async def _until_billed_in(self, agent_id: str, account: str) -> None:
        """Until a call of the agent is billed to ``account``: the move reached the catalog."""
        probe = self._probe(agent_id, account)
        give_up_at = time.monotonic() + MOVE_TIMEOUT_S
        while True:
            await self.driver.metered(lambda: load.one_at_a_time(probe, 1))
            if await self.driver.fabric.billed_calls([account]):
                return
            if time.monotonic() > give_up_at:
                raise RuntimeError(f"{agent_id}'s move to {account} never reached the catalog")
            await asyncio.sleep(0.1)
