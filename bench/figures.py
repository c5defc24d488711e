"""The figures a run produces: what the table prints and the JSON holds, field for field."""

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

    def services_total(self) -> Process:
        """The service processes summed: what the fabric costs, without nats-server."""
        services = [p for p in self.processes if p.role == "service"]
        return Process(
            f"all {len(services)} service processes",
            "services",
            sum(p.cpu_ms_per_call for p in services),
            sum(p.peak_rss_mb for p in services),
        )
