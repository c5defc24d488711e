"""One table on stdout and the same figures as JSON: Midcall beside the baseline and the task
queues, then the targets."""

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.figures import BOUNDS, Baseline, Midcall, PythonTools, Target
from bench.plan import Plan
from bench.targets import hot_path
from bench.task_queues import CELERY, TASKIQ, QueueFigures

Row = tuple[str, ...]  # a label, then a figure per column
LABEL_WIDTH = 46
COLUMN_WIDTH = 13
# The task queues' columns, by their names in the figures.
QUEUE_COLUMNS = {CELERY: "celery", TASKIQ: "taskiq"}


@dataclass(frozen=True)
class Report:
    plan: Plan
    cpus: int
    settings: dict[str, int]  # the services' concurrency limits the run had
    baseline: Baseline
    midcall: Midcall
    elapsed_s: float
    # Celery and taskiq doing the same calls in the same run; none with --no-queues.
    queues: list[QueueFigures] = field(default_factory=list)


def ratio(baseline: float | None, midcall: float | None) -> float | None:
    """Midcall over baseline: above 1 is slower for times, below 1 is fewer calls/s."""
    if baseline is None or midcall is None or baseline == 0:
        return None
    return midcall / baseline


def comparison(report: Report) -> list[dict[str, Any]]:
    """Every figure both sides have, with its ratio (midcall / baseline)."""
    base, mid = report.baseline, report.midcall
    pairs: list[tuple[str, float | None, float | None]] = [
        ("one at a time p50 ms", base.one_at_a_time.p50_ms, mid.result.p50_ms),
        ("one at a time p99 ms", base.one_at_a_time.p99_ms, mid.result.p99_ms),
    ]
    for b, m in zip(base.loops, mid.loops, strict=True):
        pairs.append((f"{b.in_flight} in flight calls/s", b.calls_per_s, m.calls_per_s))
        pairs.append((f"{b.in_flight} in flight p99 ms", b.p99_ms, m.p99_ms))
    pairs.append((f"{base.burst.calls} at once wall s", base.burst.wall_s, mid.burst.wall_s))
    return [
        {"figure": name, "baseline": b, "midcall": m, "ratio": ratio(b, m)} for name, b, m in pairs
    ]


def to_json(report: Report) -> dict[str, Any]:
    data = asdict(report)
    data["midcall"]["losses"]["lost"] = report.midcall.losses.lost
    data["midcall"]["services_total"] = asdict(report.midcall.services_total())
    data["comparison"] = comparison(report)
    data["targets"] = [asdict(target) for target in hot_path(report)]
    return data


def write_json(report: Report, path: Path) -> None:
    path.write_text(json.dumps(to_json(report), indent=2) + "\n")


def _n(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x" if value < 1 else f"{value:.1f}x"


def _pair(label: str, baseline: float | None, midcall: float | None, digits: int = 2) -> Row:
    return (f"  {label}", _n(baseline, digits), _n(midcall, digits), _x(ratio(baseline, midcall)))


def _only(label: str, midcall: float | None, digits: int = 2) -> Row:
    return (f"  {label}", "-", _n(midcall, digits), "")


def _latency_rows(report: Report) -> list[Row]:
    base, mid = report.baseline.one_at_a_time, report.midcall
    return [
        (f"one call at a time, {report.plan.one_at_a_time} calls", "", "", ""),
        _pair("time to answer / result p50 (ms)", base.p50_ms, mid.result.p50_ms),
        _pair("time to answer / result p99 (ms)", base.p99_ms, mid.result.p99_ms),
        _only("time to pending p50 (ms)", mid.pending.p50_ms),
        _only("time to pending p99 (ms)", mid.pending.p99_ms),
        _only("result minus API time p50 (ms)", mid.overhead.p50_ms),
        _only("result minus API time p99 (ms)", mid.overhead.p99_ms),
    ]


def _loop_rows(report: Report) -> list[Row]:
    rows: list[Row] = []
    for base, mid in zip(report.baseline.loops, report.midcall.loops, strict=True):
        rows += [
            (f"closed loop, {mid.calls} calls, {mid.in_flight} in flight", "", "", ""),
            _pair(
                "calls/s (Midcall: results + usage stored)", base.calls_per_s, mid.calls_per_s, 0
            ),
            _pair("time to answer / result p99 (ms)", base.p99_ms, mid.p99_ms),
            _only("billing done after last result (s)", mid.billing_lag_s),
        ]
    return rows


def _burst_rows(report: Report) -> list[Row]:
    base, mid = report.baseline.burst, report.midcall.burst
    return [
        (f"{mid.calls:,} calls at once, API answers in {mid.delay_s:g} s", "", "", ""),
        _pair("wall time until every answer / result (s)", base.wall_s, mid.wall_s),
    ]


def _process_rows(report: Report) -> list[Row]:
    services = [p for p in report.midcall.processes if p.role == "service"]
    others = [p for p in report.midcall.processes if p.role != "service"]
    labels = {"api": "API (own process)", "runtime": "bench (runtime)"}
    in_flight = report.plan.measured_in_flight
    rows: list[Row] = [(f"per process, {in_flight} in flight", "CPU ms/call", "peak RSS MB", "")]
    for process in [*services, report.midcall.services_total(), *others]:
        # A cluster's nodes by their own names (nats-server-n0, ...).
        label = process.name if process.role == "nats" else labels.get(process.role, process.name)
        rows.append((f"  {label}", _n(process.cpu_ms_per_call), _n(process.peak_rss_mb, 1), ""))
    return rows


def _sdk_rows(report: Report) -> list[Row]:
    sdk = report.midcall.sdk
    if sdk is None:
        return []
    target = sdk.target
    kept = f"{_bound(target)} {_kept(target)}"
    return [
        (f"a runtime in its own process, {sdk.calls} calls x {sdk.rounds}", "raw", "SDK", "target"),
        (f"  ({sdk.in_flight} in flight, median of the rounds)", "", "", ""),
        ("  CPU ms/call", _n(sdk.raw_ms, 3), _n(sdk.sdk_ms, 3), ""),
        ("  SDK over raw (ms/call)", "", _n(sdk.overhead_ms, 3), kept),
        ("  calls without a result", "", str(sdk.lost), ""),
    ]


def _path_rows(report: Report) -> list[Row]:
    """Per service, a plain call beside one with a progress and one cancelled."""
    paths = report.midcall.paths
    if not paths:
        return []
    services = [p.name for p in report.midcall.processes if p.role == "service"]
    first = paths[0]
    return [
        (f"progress and cancel, {first.calls} calls each", *(path.path for path in paths)),
        (f"  ({first.in_flight} in flight) CPU ms/call", *("" for _ in paths)),
        *((f"  {name}", *(_n(path.cpu_ms_per_call[name]) for path in paths)) for name in services),
        ("  services, summed", *(_n(path.services_ms) for path in paths)),
        ("  nats-server", *(_n(path.nats_ms) for path in paths)),
        ("  calls not ended as they should", *(str(path.unexpected) for path in paths)),
    ]


def _versus(label: str, http: float | None, python: float | None) -> Row:
    return (f"  {label}", _n(http), _n(python), "")


def _target(python: PythonTools, figure: str) -> str:
    """The bound the issue sets on ``figure``, and whether this run kept to it."""
    target = python.targets.get(figure)
    return "" if target is None else f"{_bound(target)} {_kept(target)}"


def _python_rows(report: Report) -> list[Row]:
    python = report.midcall.python
    if python is None:
        return []
    per_account = report.settings["sandbox_calls_per_account"]
    rows: list[Row] = [
        (f"python tools (a jail per account, {per_account} calls at once in it)", "", "", ""),
        ("", "http tool", "python", "target"),
    ]
    for section in (_warm_rows, _trivial_rows, _cold_rows, _cost_rows):
        rows += section(report, python)
    failed = f"{python.not_success} / {python.lost}"
    return [
        *rows,
        (f"python calls measured: {python.calls}", "", "", ""),
        ("  result status not success / no result", "", failed, ""),
    ]


def _warm_rows(report: Report, python: PythonTools) -> list[Row]:
    at_once = python.answering_at_once
    return [
        (f"one call at a time, {python.warm.n} calls of each in turn", "", "", ""),
        _versus("time to result p50 (ms)", python.http.p50_ms, python.warm.p50_ms),
        _versus("time to result p99 (ms)", python.http.p99_ms, python.warm.p99_ms),
        _bounded("python over http p50 (ms)", python.over_http_p50_ms, python, "over_http_p50_ms"),
        _bounded("python over http p99 (ms)", python.over_http_p99_ms, python, "over_http_p99_ms"),
        _only("a function answering at once p50 (ms)", at_once.p50_ms),
        _only("a function answering at once p99 (ms)", at_once.p99_ms),
    ]


def _trivial_rows(report: Report, python: PythonTools) -> list[Row]:
    loop = python.trivial
    http = next((m for m in report.midcall.loops if m.in_flight == loop.in_flight), None)
    return [
        (
            f"closed loop, {loop.calls} calls, {loop.in_flight} in flight "
            "(http: CheckSlots above; python: a function answering at once)",
            "",
            "",
            "",
        ),
        (
            "  calls/s (results + usage stored)",
            _n(http.calls_per_s if http else None, 0),
            _n(loop.calls_per_s, 0),
            _target(python, "trivial_calls_per_s"),
        ),
        _versus("time to result p99 (ms)", http.p99_ms if http else None, loop.p99_ms),
    ]


def _cold_rows(report: Report, python: PythonTools) -> list[Row]:
    cold = python.cold
    return [
        (f"first call in an account, {cold.accounts} accounts each way", "", "", ""),
        _only("jail started at posting: p50 (ms)", cold.registered_first.p50_ms),
        _bounded("no jail yet (cold start): p50 (ms)", cold.first.p50_ms, python, "cold_p50_ms"),
        _only("no jail yet (cold start): p99 (ms)", cold.first.p99_ms),
        _only("the same accounts' warm calls p50 (ms)", cold.warm.p50_ms),
        _only("cold minus warm, per account, p50 (ms)", cold.over_warm.p50_ms),
        _only("a jail is stopped when idle for (s)", cold.idle_reap_s, 0),
    ]


def _cost_rows(report: Report, python: PythonTools) -> list[Row]:
    cost = python.cost
    return [
        ("CPU per call, the python closed loop", "", "CPU ms/call", ""),
        _only("code-executor", cost.executor_cpu_ms_per_call),
        _only("sandboxes (nsjail, zygote, a process a call)", cost.sandboxes_cpu_ms_per_call),
        (f"memory per warm worker, median of {cost.jails} jails", "", "MB", ""),
        _only("zygote RSS", cost.zygote_rss_mb, 1),
        _only("zygote PSS", cost.zygote_pss_mb, 1),
        _only("whole jail PSS (nsjail, zygote, spare)", cost.jail_pss_mb, 1),
    ]


def _bounded(label: str, value: float | None, python: PythonTools, figure: str) -> Row:
    return (f"  {label}", "-", _n(value), _target(python, figure))


def _loss_rows(report: Report) -> list[Row]:
    losses = report.midcall.losses
    return [
        ("calls lost or failed, all phases", "baseline", "midcall", ""),
        ("  no answer / no result", str(report.baseline.failed), str(losses.no_result), ""),
        ("  result status not success", "-", str(losses.not_success), ""),
        ("  result without a pending", "-", str(losses.no_pending), ""),
        ("  accepted but not billed", "-", str(losses.not_billed), ""),
        ("  messages redelivered (not lost)", "-", str(losses.redelivered), ""),
    ]


def _queue_rows(report: Report) -> list[Row]:
    """Celery and taskiq beside the direct call and Midcall, phase for phase."""
    if not report.queues:
        return []
    base, mid, services = report.baseline, report.midcall, report.midcall.services_total()
    labels = [
        "one at a time p50 (ms)",
        "one at a time p99 (ms)",
        *(f"{n} in flight {f}" for n in report.plan.in_flight for f in ("calls/s", "p99 (ms)")),
        f"{mid.burst.calls:,} at once, wall (s)",
        "CPU ms/call (workers; services)",
        "peak RSS MB, summed",
        "calls failed (midcall: lost)",
    ]
    columns = [
        # The direct call is made in the bench's own process: it has no cost of its own.
        [*_phases(base, burst_done=True), "-", "-", str(base.failed)],
        *(_queue_column(queue) for queue in report.queues),
        [
            _n(mid.result.p50_ms),
            _n(mid.result.p99_ms),
            *(cell for loop in mid.loops for cell in (_n(loop.calls_per_s, 0), _n(loop.p99_ms))),
            _n(mid.burst.wall_s),
            _n(services.cpu_ms_per_call),
            _n(services.peak_rss_mb, 1),
            str(mid.losses.lost),
        ],
    ]
    names = (QUEUE_COLUMNS[queue.name] for queue in report.queues)
    header = ("task queues doing the same calls, this run", "baseline", *names, "midcall")
    rows = zip(labels, *columns, strict=True)
    return [header, *((f"  {label}", *cells) for label, *cells in rows)]


def _queue_column(queue: QueueFigures) -> list[str]:
    costs = [_n(queue.cpu_ms_per_call), _n(queue.peak_rss_mb, 1), str(queue.baseline.failed)]
    return [*_phases(queue.baseline, queue.burst_done), *costs]


def _phases(figures: Baseline, burst_done: bool) -> list[str]:
    """The figures the direct call and a queue share, in the queue section's order."""
    one = figures.one_at_a_time
    loops = (cell for loop in figures.loops for cell in (_n(loop.calls_per_s, 0), _n(loop.p99_ms)))
    return [
        _n(one.p50_ms),
        _n(one.p99_ms),
        *loops,
        _n(figures.burst.wall_s) if burst_done else "not done",
    ]


def _target_rows(report: Report) -> list[Row]:
    rows: list[Row] = [("targets: the hot path, python tools, the SDK", "bound", "measured", "met")]
    for target in hot_path(report):
        rows.append((f"  {target.figure}", _bound(target), _n(target.value), _kept(target)))
    return rows


def _bound(target: Target) -> str:
    if target.limit is None:
        return "-"
    return f"{BOUNDS[target.bound][0]}{target.limit:.4g}"


def _kept(target: Target) -> str:
    """Met, MISSED, or "-": no figure of the run to hold it to (a queue not measured)."""
    return "-" if target.met is None else "met" if target.met else "MISSED"


def _title(report: Report) -> list[str]:
    plan, limits = report.plan, report.settings
    return [
        f"Midcall vs a direct httpx call to the same API: {plan.name} plan, "
        f"{report.elapsed_s:.0f} s, {report.cpus} CPUs, all co-located",
        f"{plan.replicas} process(es) each of dispatcher, http-executor, code-executor, "
        "result-injector; "
        f"executor concurrency {limits['executor_concurrency']} per process; NATS: "
        + (
            f"{plan.nats_nodes}-node cluster, every stream R{plan.nats_nodes}"
            if plan.nats_nodes > 1
            else "one server"
        ),
    ]


def render(report: Report) -> str:
    rows: list[Row] = [("figure", "baseline", "midcall", "midcall/base")]
    sections = (
        _latency_rows,
        _loop_rows,
        _burst_rows,
        _process_rows,
        _python_rows,
        _sdk_rows,
        _path_rows,
        _loss_rows,
        _queue_rows,
        _target_rows,
    )
    for section in sections:
        rows += section(report)
    lines = _title(report)
    for label, *columns in rows:
        line = label.ljust(LABEL_WIDTH) + "".join(c.rjust(COLUMN_WIDTH) for c in columns)
        lines.append(line.rstrip())
    return "\n".join(lines)
