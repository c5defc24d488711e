"""The hot path's performance targets, against one run's figures.

Each is a ``Target``: a bound, what the run measured, and whether it was
kept. Bounds set against the task queues are their figures from the same run;
where a queue was not measured (``--no-queues``) or has no such figure, the
target is listed with no limit, neither met nor missed. The bounds earlier
work set on python tools and on the SDK follow, as those phases report them.
"""

from typing import TYPE_CHECKING

from bench.figures import Target
from bench.task_queues import CELERY, TASKIQ, QueueFigures

if TYPE_CHECKING:  # the report renders these
    from bench.report import Report

# The machine-independent ones: ratios to the direct call or to a queue are below.
SERVICES_CPU_MS = 1.2
NATS_CPU_MS = 0.4
CALLS_PER_S = 1200.0
LOOP_P99_MS = 400.0
PENDING_P50_MS, PENDING_P99_MS = 1.5, 4.0
OVERHEAD_P50_MS, OVERHEAD_P99_MS = 3.0, 8.0
BURST_OVER_DIRECT = 1.3
SERVICES_RSS_MB = 400.0


def hot_path(report: "Report") -> list[Target]:
    mid, base, plan = report.midcall, report.baseline, report.plan
    services = mid.services_total()
    nats_ms = sum(p.cpu_ms_per_call for p in mid.processes if p.role == "nats")
    busiest = next(loop for loop in mid.loops if loop.in_flight == plan.measured_in_flight)
    at = f"at {busiest.in_flight} in flight"
    queues = {queue.name: queue for queue in report.queues}
    targets = [
        Target.at_most("services CPU ms/call", SERVICES_CPU_MS, services.cpu_ms_per_call),
        Target.at_most("nats-server CPU ms/call", NATS_CPU_MS, nats_ms),
        Target.at_least(f"calls/s {at}", CALLS_PER_S, busiest.calls_per_s),
        Target.above(
            "calls/s, more than taskiq's",
            _loop_rate(queues.get(TASKIQ), busiest.in_flight),
            busiest.calls_per_s,
        ),
        Target.at_most(f"p99 ms {at}", LOOP_P99_MS, busiest.p99_ms),
        Target.at_most("one call: to pending p50 ms", PENDING_P50_MS, mid.pending.p50_ms),
        Target.at_most("one call: to pending p99 ms", PENDING_P99_MS, mid.pending.p99_ms),
        Target.below(
            "one call: result p50 ms, below Celery's",
            _one_call_p50(queues.get(CELERY)),
            mid.result.p50_ms,
        ),
        Target.at_most("one call: result minus API p50 ms", OVERHEAD_P50_MS, mid.overhead.p50_ms),
        Target.at_most("one call: result minus API p99 ms", OVERHEAD_P99_MS, mid.overhead.p99_ms),
        Target.at_most(
            f"{mid.burst.calls:,} at once: wall s (direct x{BURST_OVER_DIRECT:g})",
            BURST_OVER_DIRECT * base.burst.wall_s,  # unrounded: rounding could pass a miss
            mid.burst.wall_s,
        ),
        Target.at_most("services peak RSS MB, summed", SERVICES_RSS_MB, services.peak_rss_mb),
    ]
    if mid.python is not None:
        targets += mid.python.targets.values()
    if mid.sdk is not None:
        targets.append(mid.sdk.target)
    return targets


def _loop_rate(queue: QueueFigures | None, in_flight: int) -> float | None:
    """The queue's calls/s at ``in_flight``; None where it was not measured."""
    if queue is None:
        return None
    loops = queue.baseline.loops
    return next((loop.calls_per_s for loop in loops if loop.in_flight == in_flight), None)


def _one_call_p50(queue: QueueFigures | None) -> float | None:
    """The queue's one-call p50; None where it was not measured."""
    return None if queue is None else queue.baseline.one_at_a_time.p50_ms
