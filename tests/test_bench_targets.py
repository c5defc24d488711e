"""The hot path's targets (bench.targets) against hand-made figures: exact bounds and verdicts."""

from bench.figures import Baseline, Burst, Loop, Midcall, Process
from bench.plan import QUICK
from bench.report import Report, render
from bench.stats import Latency
from bench.targets import hot_path
from bench.task_queues import CELERY, TASKIQ, QueueFigures


def _baseline(p50_ms: float, calls_per_s: float, wall_s: float) -> Baseline:
    loops = [Loop(64, 400, calls_per_s, 5.0), Loop(256, 400, calls_per_s, 9.0)]
    return Baseline(Latency(p50_ms, 2 * p50_ms, 50), loops, Burst(1000, 1.0, wall_s), 0)


def _report(queues: list[QueueFigures]) -> Report:
    midcall = Midcall(
        replicas=1,
        pending=Latency(1.4, 4.5, 50),
        result=Latency(5.0, 9.0, 50),
        overhead=Latency(3.5, 7.0, 50),
        loops=[Loop(64, 400, 500.0, 90.0), Loop(256, 400, 1300.0, 410.0)],
        burst=Burst(1000, 1.0, 2.5),
        processes=[
            Process("dispatcher", "service", 0.5, 150.0),
            Process("http-executor", "service", 0.6, 200.0),
            Process("nats-server", "nats", 0.3, 100.0),
            Process("api", "api", 0.1, 40.0),
        ],
    )
    limits = {"executor_concurrency": 50_000, "sandbox_calls_per_account": 4}
    return Report(QUICK, 2, limits, _baseline(0.5, 2000.0, 2.0), midcall, 60.0, queues)


def _verdicts(report: Report) -> dict[str, tuple[float, float | None, bool]]:
    return {t.figure: (t.limit, t.value, t.met) for t in hot_path(report)}


def test_each_target_is_its_bound_against_the_figure_it_names() -> None:
    verdicts = _verdicts(_report([]))

    assert verdicts == {
        "services CPU ms/call": (1.2, 1.1, True),
        "nats-server CPU ms/call": (0.4, 0.3, True),
        "calls/s at 256 in flight": (1200.0, 1300.0, True),
        "p99 ms at 256 in flight": (400.0, 410.0, False),
        "one call: to pending p50 ms": (1.5, 1.4, True),
        "one call: to pending p99 ms": (4.0, 4.5, False),
        "one call: result minus API p50 ms": (3.0, 3.5, False),
        "one call: result minus API p99 ms": (8.0, 7.0, True),
        "1,000 at once: wall s (direct x1.3)": (2.6, 2.5, True),
        "services peak RSS MB, summed": (400.0, 350.0, True),
    }


def test_the_queues_bounds_are_their_figures_in_the_same_run() -> None:
    celery = QueueFigures(CELERY, _baseline(4.0, 300.0, 30.0), 160.0, 2.5, burst_done=False)
    taskiq = QueueFigures(TASKIQ, _baseline(7.0, 1400.0, 4.0), 120.0, 1.6, burst_done=True)

    verdicts = _verdicts(_report([celery, taskiq]))

    assert verdicts["calls/s, more than taskiq's"] == (1400.0, 1300.0, False)
    assert verdicts["one call: result p50 ms, below Celery's"] == (4.0, 5.0, False)
    lines = {
        line.split("  ")[1]: line.split()
        for line in render(_report([celery, taskiq])).splitlines()
        if line.startswith("  ")
    }
    # Celery's burst ran out of time; each queue's figure beside Midcall's.
    assert lines["1,000 at once, wall (s)"][-4:] == ["not", "done", "4.00", "2.50"]
    assert lines["calls/s, more than taskiq's"][-3:] == [">=1400", "1,300.00", "MISSED"]
    assert lines["services CPU ms/call"][-3:] == ["<=1.2", "1.10", "met"]
