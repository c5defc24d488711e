"""The task queues' benchmark with a handful of calls: every call comes back through both
queues, every figure is there, and nothing it started outlives it.

Speed is not asserted (the machine is shared). Needs the Redis server at
127.0.0.1:6379; its database 7 is emptied.
"""

import dataclasses
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.api import ApiProcess
from bench.plan import QUICK
from bench.task_queues import measure

TINY = dataclasses.replace(
    QUICK, one_at_a_time=5, loop_calls=40, in_flight=(8,), at_once=20, warmup=2, delay_s=0.2
)


@pytest.fixture
def api_url() -> Iterator[str]:
    api = ApiProcess()
    yield api.start()
    api.stop()


async def test_both_queues_answer_every_call(api_url: str, tmp_path: Path) -> None:
    figures = await measure(TINY, api_url, tmp_path)

    assert [queue.name for queue in figures] == ["celery prefork x2", "taskiq jetstream x1"]
    for queue in figures:
        assert queue.baseline.failed == 0, queue.name
        assert queue.burst_done, queue.name
        assert queue.baseline.one_at_a_time.n == TINY.one_at_a_time
        [loop] = queue.baseline.loops
        assert (loop.in_flight, loop.calls) == (8, TINY.loop_calls)
        assert loop.calls_per_s > 0
        assert loop.p99_ms is not None
        assert queue.baseline.burst.calls == TINY.at_once
        assert queue.baseline.burst.wall_s >= TINY.delay_s
        assert queue.cpu_ms_per_call > 0
        assert queue.peak_rss_mb > 0
    # The workers (by their app's import path) and the nats-server (by its data directory).
    assert _running("bench.task_queues:") == ""
    assert _running(str(tmp_path)) == ""


def _running(pattern: str) -> str:
    found = subprocess.run(["pgrep", "-af", pattern], capture_output=True, text=True, check=False)
    return found.stdout
