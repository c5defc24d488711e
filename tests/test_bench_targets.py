"""The hot path's targets (bench.targets) and the queues' columns of the table, on hand-made
figures: exact bounds, verdicts and cells."""

from dataclasses import replace

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


Verdict = tuple[float | None, float | None, bool | None]  # limit, value, met


def _verdicts(report: Report) -> dict[str, Verdict]:
    return {t.figure: (t.limit, t.value, t.met) for t in hot_path(report)}


def _rows(report: Report) -> dict[str, list[str]]:
    """The table's indented rows by label: the cells after it, split at spaces."""
    rows = {}
    for line in render(report).splitlines():
        if line.startswith("  "):
            label, _, cells = line[2:].partition("  ")
            rows[label] = cells.split()
    return rows


def _queues(taskiq_calls_per_s: float, celery_p50_ms: float) -> list[QueueFigures]:
    celery = _baseline(celery_p50_ms, 300.0, 30.0)
    taskiq = _baseline(7.0, taskiq_calls_per_s, 4.0)
    return [
        QueueFigures(CELERY, celery, 160.0, 2.5, burst_done=False),
        QueueFigures(TASKIQ, taskiq, 120.0, 1.6, burst_done=True),
    ]


def test_each_target_is_its_bound_against_the_figure_it_names() -> None:
    verdicts = _verdicts(_report(_queues(taskiq_calls_per_s=1200.0, celery_p50_ms=6.0)))

    assert verdicts == {
        "services CPU ms/call": (1.2, 1.1, True),
        "nats-server CPU ms/call": (0.4, 0.3, True),
        "calls/s at 256 in flight": (1200.0, 1300.0, True),
        "calls/s, more than taskiq's": (1200.0, 1300.0, True),
        "p99 ms at 256 in flight": (400.0, 410.0, False),
        "one call: to pending p50 ms": (1.5, 1.4, True),
        "one call: to pending p99 ms": (4.0, 4.5, False),
        "one call: result p50 ms, below Celery's": (6.0, 5.0, True),
        "one call: result minus API p50 ms": (3.0, 3.5, False),
        "one call: result minus API p99 ms": (8.0, 7.0, True),
        "1,000 at once: wall s (direct x1.3)": (2.6, 2.5, True),
        "services peak RSS MB, summed": (400.0, 350.0, True),
    }


def test_the_queues_bounds_are_their_figures_in_the_same_run() -> None:
    report = _report(_queues(taskiq_calls_per_s=1400.0, celery_p50_ms=4.0))

    verdicts = _verdicts(report)

    assert verdicts["calls/s, more than taskiq's"] == (1400.0, 1300.0, False)
    assert verdicts["one call: result p50 ms, below Celery's"] == (4.0, 5.0, False)
    rows = _rows(report)
    assert rows["calls/s, more than taskiq's"] == [">1400", "1,300.00", "MISSED"]
    assert rows["one call: result p50 ms, below Celery's"] == ["<4", "5.00", "MISSED"]
    assert rows["services CPU ms/call"] == ["<=1.2", "1.10", "met"]


def test_doing_only_as_well_as_a_queue_is_not_doing_better() -> None:
    report = _report(_queues(taskiq_calls_per_s=1300.0, celery_p50_ms=5.0))

    verdicts = _verdicts(report)

    assert verdicts["calls/s, more than taskiq's"] == (1300.0, 1300.0, False)
    assert verdicts["one call: result p50 ms, below Celery's"] == (5.0, 5.0, False)


def test_without_the_queues_their_targets_are_neither_met_nor_missed() -> None:
    report = _report([])

    verdicts = _verdicts(report)

    assert verdicts["calls/s, more than taskiq's"] == (None, 1300.0, None)
    assert verdicts["one call: result p50 ms, below Celery's"] == (None, 5.0, None)
    assert verdicts["calls/s at 256 in flight"] == (1200.0, 1300.0, True)
    rows = _rows(report)
    assert rows["calls/s, more than taskiq's"] == ["-", "1,300.00", "-"]
    assert rows["one call: result p50 ms, below Celery's"] == ["-", "5.00", "-"]
    assert "task queues doing the same calls, this run" not in render(report)


def test_a_figure_not_measured_misses_its_target() -> None:
    queueless = _report([])
    loops = [queueless.midcall.loops[0], Loop(256, 400, 1300.0, None)]  # no call came back
    report = replace(queueless, midcall=replace(queueless.midcall, loops=loops))

    assert _verdicts(report)["p99 ms at 256 in flight"] == (400.0, None, False)
    assert _rows(report)["p99 ms at 256 in flight"] == ["<=400", "-", "MISSED"]


def test_each_queue_is_a_column_beside_the_direct_call_and_midcall() -> None:
    rows = _rows(_report(_queues(taskiq_calls_per_s=1400.0, celery_p50_ms=4.0)))

    # baseline, celery, taskiq, midcall
    assert rows["one at a time p50 (ms)"] == ["0.50", "4.00", "7.00", "5.00"]
    assert rows["256 in flight calls/s"] == ["2,000", "300", "1,400", "1,300"]
    # Celery's burst ran out of time.
    assert rows["1,000 at once, wall (s)"] == ["2.00", "not", "done", "4.00", "2.50"]
    assert rows["CPU ms/call (workers; services)"] == ["-", "2.50", "1.60", "1.10"]
    assert rows["peak RSS MB, summed"] == ["-", "160.0", "120.0", "350.0"]
