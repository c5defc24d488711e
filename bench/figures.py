"""The figures a run produces: what the table prints and the JSON holds, field for field."""

import operator
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.stats import Latency


@dataclass(frozen=True)
class Loop:
    """A closed loop: ``in_flight`` calls outstanding until ``calls`` were made."""

    in_flight: int
    calls: int
    calls_per_s: float  # Midcall: until results are in AND billing stored every usage record
    p99_ms: float | None  # Midcall: time to result
    billing_lag_s: float | None = None  # Midcall: last result -> billing drained


@dataclass(frozen=True)
class Burst:
    """``calls`` started at once against an API that takes ``delay_s``."""

    calls: int
    delay_s: float
    wall_s: float  # until the last answer, or until the phase gave up


@dataclass(frozen=True)
class Baseline:
    """The floor: the bench process calling the API directly with httpx."""

    one_at_a_time: Latency
    loops: list[Loop]
    burst: Burst
    failed: int  # requests that raised or were not 2xx


@dataclass(frozen=True)
class Process:
    """One process's cost while the busiest closed loop ran, and its peak memory."""

    name: str
    role: str  # "service", "nats", "api" or "runtime"
    cpu_ms_per_call: float
    peak_rss_mb: float


@dataclass
class Losses:
    """Calls that did not come back as the contract promises."""

    no_result: int = 0  # no result by the phase's timeout
    not_success: int = 0  # a result whose status is not "success"
    no_pending: int = 0  # a result with no pending before it
    not_billed: int = 0  # accepted calls missing from billing's totals at the end
    # Not a loss: messages JetStream delivered again (an ack wait ran out), all stages summed.
    redelivered: int = 0

    @property
    def lost(self) -> int:
        return self.no_result + self.not_billed


# A bound's name, as the JSON holds it: its sign in the table, and the test a figure passes.
BOUNDS: dict[str, tuple[str, Callable[[float, float], bool]]] = {
    "at most": ("<=", operator.le),
    "at least": (">=", operator.ge),
    "below": ("<", operator.lt),
    "above": (">", operator.gt),
}


@dataclass(frozen=True)
class Target:
    """A bound the issue sets on a figure, and whether this run kept to it."""

    figure: str
    bound: str  # a key of BOUNDS
    # None: the bound is another figure of the run (a task queue's) that was not measured.
    limit: float | None
    value: float | None  # None: nothing measured, so not met
    met: bool | None  # None: no limit to hold the value to, neither met nor missed

    @classmethod
    def of(cls, figure: str, bound: str, limit: float | None, value: float | None) -> "Target":
        if limit is None:
            return cls(figure, bound, limit, value, None)
        passes = BOUNDS[bound][1]
        return cls(figure, bound, limit, value, value is not None and passes(value, limit))

    @classmethod
    def at_most(cls, figure: str, limit: float | None, value: float | None) -> "Target":
        return cls.of(figure, "at most", limit, value)

    @classmethod
    def at_least(cls, figure: str, limit: float | None, value: float | None) -> "Target":
        return cls.of(figure, "at least", limit, value)

    @classmethod
    def below(cls, figure: str, limit: float | None, value: float | None) -> "Target":
        return cls.of(figure, "below", limit, value)

    @classmethod
    def above(cls, figure: str, limit: float | None, value: float | None) -> "Target":
        return cls.of(figure, "above", limit, value)


@dataclass(frozen=True)
class SdkCost:
    """A runtime's CPU per call in its own process: raw nats-py against the SDK
    (``bench.sdk_cost``), medians of the rounds run in turn."""

    calls: int  # per round and variant
    in_flight: int
    rounds: int
    raw_ms: float
    sdk_ms: float
    lost: int  # calls with no result, both variants
    target: Target  # the bound on sdk_ms - raw_ms

    @property
    def overhead_ms(self) -> float:
        return self.sdk_ms - self.raw_ms


@dataclass(frozen=True)
class PathCost:
    """One kind of call in a closed loop of its own: the CPU each process spent per call
    (deadline timers included), and whether each call ended as its kind should."""

    path: str  # "plain", "progress" or "cancel" (see ``bench.progress_cancel``)
    calls: int
    in_flight: int
    cpu_ms_per_call: dict[str, float]  # by process, as ``Midcall.processes`` names them
    services_ms: float  # the service processes summed
    nats_ms: float
    unexpected: int  # ended otherwise than the path's calls should, or not at all


@dataclass(frozen=True)
class ColdStarts:
    """Accounts' first calls of a python tool (see ``bench.cold_starts``)."""

    accounts: int
    registered_first: Latency  # in the account the tool was posted in: its jail started then
    first: Latency  # in an account with no jail: a cold start
    warm: Latency  # the calls after ``first``, in the same accounts
    over_warm: Latency  # per account: its cold first call minus the median of its warm ones
    idle_reap_s: float  # MIDCALL_SANDBOX_IDLE_S: a jail idle this long is stopped


@dataclass(frozen=True)
class SandboxCost:
    """CPU per call of the trivial loop, and a warm jail's memory (the median jail's)."""

    executor_cpu_ms_per_call: float  # the code-executor process(es) themselves
    sandboxes_cpu_ms_per_call: float  # everything under them: nsjail, zygotes, calls
    jails: int  # running when memory was read
    zygote_rss_mb: float | None
    zygote_pss_mb: float | None  # None: smaps_rollup not readable
    jail_pss_mb: float | None  # nsjail, zygote and its spare together


@dataclass(frozen=True)
class PythonTools:
    """Python tools against the same work as an HTTP tool, on the same fabric."""

    # One call at a time, the three in turn: the fast HTTP tool (CheckSlots), its
    # request made by a function, and a function answering at once.
    warm: Latency
    http: Latency
    over_http_p50_ms: float | None
    over_http_p99_ms: float | None
    answering_at_once: Latency
    trivial: Loop  # a function that returns at once, in a closed loop
    cold: ColdStarts
    cost: SandboxCost
    calls: int  # measured python calls, all phases
    not_success: int
    lost: int  # no result
    # The bounds (``python_targets``), by the figure each bounds.
    targets: dict[str, Target] = field(default_factory=dict)


def python_targets(
    over_http_p50_ms: float | None, over_http_p99_ms: float | None, trivial: Loop, cold: ColdStarts
) -> dict[str, Target]:
    """The issue's bounds on python tools' speed, against what a run measured."""
    return {
        "over_http_p50_ms": Target.at_most("warm: python over http p50 ms", 3.0, over_http_p50_ms),
        "over_http_p99_ms": Target.at_most("warm: python over http p99 ms", 8.0, over_http_p99_ms),
        "trivial_calls_per_s": Target.at_least(
            "trivial function calls/s", 200.0, trivial.calls_per_s
        ),
        "cold_p50_ms": Target.at_most("cold start: first call p50 ms", 150.0, cold.first.p50_ms),
    }


@dataclass(frozen=True)
class Midcall:
    replicas: int
    pending: Latency
    result: Latency
    overhead: Latency  # time to result minus the executor's HTTP time
    loops: list[Loop]
    burst: Burst
    processes: list[Process]
    losses: Losses = field(default_factory=Losses)
    python: PythonTools | None = None
    sdk: SdkCost | None = None
    paths: list[PathCost] = field(default_factory=list)  # plain, progress, cancel

    def services_total(self) -> Process:
        """The service processes summed: what the fabric costs, without nats-server."""
        services = [p for p in self.processes if p.role == "service"]
        return Process(
            f"all {len(services)} service processes",
            "services",
            sum(p.cpu_ms_per_call for p in services),
            sum(p.peak_rss_mb for p in services),
        )
