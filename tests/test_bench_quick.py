"""The benchmark harness, run once in its quick form: every call comes back, every figure is there.

Speed is never asserted here (the machine is shared and noisy); what is
asserted is that the harness measures what it says, and that the fabric
loses nothing under the benchmark's load.
"""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
RUN_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, str, dict[str, Any]]:
    figures = tmp_path_factory.mktemp("bench") / "results.json"
    finished = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--json", str(figures)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    assert figures.exists(), finished.stderr
    return finished.returncode, finished.stdout, json.loads(figures.read_text())


def test_no_call_is_lost_or_fails(quick_run: tuple[int, str, dict[str, Any]]) -> None:
    code, table, figures = quick_run

    assert figures["midcall"]["losses"] == {
        "no_result": 0,
        "not_success": 0,
        "no_pending": 0,
        "not_billed": 0,
        "redelivered": 0,  # no ack wait ran out: heartbeats hold all the work in hand
        "lost": 0,
    }
    assert figures["baseline"]["failed"] == 0
    assert code == 0, table


def test_the_json_holds_every_figure_of_the_table(
    quick_run: tuple[int, str, dict[str, Any]],
) -> None:
    _, table, figures = quick_run
    midcall, plan = figures["midcall"], figures["plan"]

    assert plan["name"] == "quick"
    assert [loop["in_flight"] for loop in midcall["loops"]] == [64, 256]
    assert [loop["in_flight"] for loop in figures["baseline"]["loops"]] == [64, 256]
    for latency in ("pending", "result", "overhead"):
        assert midcall[latency]["n"] == plan["one_at_a_time"]
        assert midcall[latency]["p50_ms"] <= midcall[latency]["p99_ms"]
    assert midcall["burst"]["calls"] == figures["baseline"]["burst"]["calls"] == 1000
    assert [c["figure"] for c in figures["comparison"]] == [
        "one at a time p50 ms",
        "one at a time p99 ms",
        "64 in flight calls/s",
        "64 in flight p99 ms",
        "256 in flight calls/s",
        "256 in flight p99 ms",
        "1000 at once wall s",
    ]
    assert all(c["ratio"] > 0 for c in figures["comparison"])
    assert table.splitlines()[2].split() == ["figure", "baseline", "midcall", "midcall/base"]


def test_every_process_is_measured(quick_run: tuple[int, str, dict[str, Any]]) -> None:
    _, table, figures = quick_run
    processes = {p["name"]: p for p in figures["midcall"]["processes"]}

    assert set(processes) == {
        "registry",
        "dispatcher",
        "http-executor",
        "result-injector",
        "billing",
        "nats-server",
        "api",
        "runtime",
    }
    assert all(p["cpu_ms_per_call"] >= 0 and p["peak_rss_mb"] > 0 for p in processes.values())
    # The executor made every HTTP call of the measured loop: it cannot have cost nothing.
    assert processes["http-executor"]["cpu_ms_per_call"] > 0
    total = figures["midcall"]["services_total"]
    assert total["name"] == "all 5 service processes"
    assert total["peak_rss_mb"] > processes["dispatcher"]["peak_rss_mb"]
    assert all(name in table for name in processes if name not in ("api", "runtime"))
