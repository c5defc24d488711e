"""Percentiles for the benchmarks' tables, JSON and printouts."""

import statistics
from dataclasses import dataclass


@dataclass(frozen=True)
class Latency:
    """Median and 99th percentile of some samples, in milliseconds."""

    p50_ms: float | None  # None: no samples (every call was lost), not a number to compare
    p99_ms: float | None
    n: int


def _p99(ordered: list[float]) -> float:
    # Nearest rank: a p99 is always a sample that was seen.
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def latency(samples_ms: list[float]) -> Latency:
    if not samples_ms:
        return Latency(None, None, 0)
    ordered = sorted(samples_ms)
    return Latency(statistics.median(ordered), _p99(ordered), len(ordered))


def summary(samples_ms: list[float]) -> str:
    ordered = sorted(samples_ms)
    return (
        f"p50 {statistics.median(ordered):.2f} ms, p99 {_p99(ordered):.2f} ms, "
        f"max {ordered[-1]:.2f} ms (n={len(ordered)})"
    )
