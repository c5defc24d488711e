"""One table on stdout and the same figures as JSON, with Midcall beside the baseline."""

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.figures import Baseline, Midcall
from bench.plan import Plan

Row = tuple[str, str, str, str]
LABEL_WIDTH = 46
COLUMN_WIDTH = 13


@dataclass(frozen=True)
class Report:
    plan: Plan
    cpus: int
    settings: dict[str, int]  # the services' concurrency limits the run had
    baseline: Baseline
    midcall: Midcall
    elapsed_s: float


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
    labels = {"nats": "nats-server", "api": "API (own process)", "runtime": "bench (runtime)"}
    in_flight = report.plan.measured_in_flight
    rows: list[Row] = [(f"per process, {in_flight} in flight", "CPU ms/call", "peak RSS MB", "")]
    for process in [*services, report.midcall.services_total(), *others]:
        label = labels.get(process.role, process.name)
        rows.append((f"  {label}", _n(process.cpu_ms_per_call), _n(process.peak_rss_mb, 1), ""))
    return rows


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


def _title(report: Report) -> list[str]:
    plan, limits = report.plan, report.settings
    return [
        f"Midcall vs a direct httpx call to the same API: {plan.name} plan, "
        f"{report.elapsed_s:.0f} s, {report.cpus} CPUs, all co-located",
        f"{plan.replicas} process(es) each of dispatcher, http-executor, result-injector; "
        f"executor concurrency {limits['executor_concurrency']} per process",
    ]


def render(report: Report) -> str:
    rows: list[Row] = [("figure", "baseline", "midcall", "midcall/base")]
    for section in (_latency_rows, _loop_rows, _burst_rows, _process_rows, _loss_rows):
        rows += section(report)
    lines = _title(report)
    for label, *columns in rows:
        line = label.ljust(LABEL_WIDTH) + "".join(c.rjust(COLUMN_WIDTH) for c in columns)
        lines.append(line.rstrip())
    return "\n".join(lines)
