"""Two well-known task queues doing the benchmark's job: Celery on Redis, taskiq on JetStream.

Each queue's task does what Midcall's HTTP tool does: it POSTs a call's
arguments (``bench.plan.arguments``: ``BODY``'s JSON and the call's turn),
carried in the task message as Midcall's calls carry them, to the loopback API
and returns the parsed JSON body. Each queue is measured as ``bench.baseline``
measures the direct call, phase for phase: warm-up, one call at a time (enqueue
to result in the client's hands), the closed loops, every call at once against
the delayed endpoint; plus its workers' CPU per call during the busiest loop and
their summed peak RSS. "Workers" is the worker command's whole process tree (a
supervisor and its pool); a forked child's pages shared with its parent count in
both, as ``ps`` shows them. Redis's and nats-server's own cost is in neither.

- Celery, ``celery worker -P prefork -c 2``, broker and result backend Redis
  (127.0.0.1:6379, database 7, emptied first and last). The task is sync, with
  one ``httpx.Client`` per pool process. ``AsyncResult.get()`` blocks, so each
  call (``delay`` then ``get``) runs on a thread of a pool sized to the most
  calls ever outstanding, capped at ``CELERY_THREADS``; both in one thread,
  because ``delay`` subscribes to the result's channel with that thread's
  result backend. Celery keeps a backend per thread, so each thread holds Redis
  connections of its own (about 430 for 256 in flight), one of them subscribed:
  ``get()`` waits for the message the worker publishes with the result instead
  of polling for it.
- taskiq with taskiq-nats' ``PullBasedJetStreamBroker`` (its README's JetStream
  broker, with its defaults) on a nats-server of the bench's own; results in
  Redis (taskiq-redis, the same database). taskiq-nats has no key-value result
  backend, and its Object Store one fails under this load: each poll of a
  result reads an object through a new ordered consumer, and at 256 in flight
  nats-server refuses them ("maximum consumers limit reached"). The worker is
  ``taskiq worker --workers 1`` with its default ``--max-async-tasks`` (100):
  the task is async and waits on I/O, so one event loop serves many at once
  (taskiq's default of two processes would double its memory for nothing at
  this load). The task shares one ``httpx.AsyncClient`` per process.
  ``wait_result`` polls the backend, here every ``TASKIQ_CHECK_INTERVAL_S``: its
  default, 0.2 s, alone makes one call take 200 ms; 1 ms took one call from
  about 7 ms to 3.5 ms for five times the polls, and the loops went no faster.

The burst stops at ``min(plan.at_once_timeout_s, BURST_LIMIT_S)`` per queue:
workers that take the delayed calls two or a hundred at a time cannot finish
thousands of them in a minute, and waiting longer tells nothing more. Calls
without a result then are not failures: the burst is marked not done, its wall
time the limit. Workers are subprocesses (their CPU and memory are theirs
alone), each command in a process group of its own, stopped at the end.

Run: python -m bench.task_queues [--quick]
"""

import argparse
import asyncio
import functools
import gc
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from bench import load
from bench.figures import Baseline, Burst, Loop
from bench.procstats import CpuSnapshot, peak_rss_mb, raise_fd_limit
from bench.sandboxes import children_of, descendants
from bench.stats import latency
from shared.fabric.nats_server import NatsServer
from shared.process.processes import die_with_parent

# The workers import this module, and their memory is measured: what only the bench
# side needs and weighs (bench.plan loads pydantic and jsonschema, bench.api aiohttp:
# 20 MB more in each Celery process) is imported where it is used.
if TYPE_CHECKING:
    from celery import Celery
    from taskiq import AsyncBroker, AsyncTaskiqDecoratedTask

    from bench.plan import Plan

log = logging.getLogger("bench.task_queues")
REPO = Path(__file__).resolve().parent.parent
REDIS_URL = "redis://127.0.0.1:6379/7"
NATS_URL_VARIABLE = "BENCH_TASKIQ_NATS_URL"  # where the taskiq worker finds its server
TASK = "bench.post"  # one name in the client and the workers (here it may run as __main__)
HEADERS = {"Content-Type": "application/json"}
HTTP_TIMEOUT_S = 30.0  # no tighter than a burst: a request may wait for the delayed API
BURST_LIMIT_S = 30.0
CELERY_PROCESSES = 2
CELERY_THREADS = 1000  # each holds Redis connections; Redis takes 10,000 clients by default
TASKIQ_CHECK_INTERVAL_S = 0.005
STARTUP_TIMEOUT_S = 30.0
# The queues' names in the figures.
CELERY = f"celery prefork x{CELERY_PROCESSES}"
TASKIQ = "taskiq jetstream x1"
STOP_TIMEOUT_S = 10.0

Answer = dict[str, Any]
Arguments = Callable[[int], dict[str, Any]]
# (url, arguments, give_up_at on the monotonic clock) -> the API's answer, through the queue.
Send = Callable[[str, dict[str, Any], float], Awaitable[Answer]]


@dataclass(frozen=True)
class QueueFigures:
    """A queue's figures, phase for phase those of the direct call, and its workers' cost."""

    name: str
    baseline: Baseline
    peak_rss_mb: float  # the worker processes' summed
    cpu_ms_per_call: float  # the worker processes', during the busiest closed loop
    burst_done: bool  # every call of the burst had its result before the limit


# The apps, as the workers and the client build them.


def _post_sync(url: str, arguments: dict[str, Any]) -> Answer:
    response = _sync_http().post(url, content=json.dumps(arguments).encode(), headers=HEADERS)
    response.raise_for_status()
    answer: Answer = response.json()
    return answer


async def _post_async(url: str, arguments: dict[str, Any]) -> Answer:
    response = await _async_http().post(
        url, content=json.dumps(arguments).encode(), headers=HEADERS
    )
    response.raise_for_status()
    answer: Answer = response.json()
    return answer


# Built on a process's first call: in each prefork child, after the fork.
@functools.cache
def _sync_http() -> httpx.Client:
    return httpx.Client(timeout=HTTP_TIMEOUT_S)


@functools.cache
def _async_http() -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=HTTP_TIMEOUT_S)


@functools.cache
def _celery() -> tuple["Celery", Any]:
    """The Celery app and its task (celery is untyped)."""
    from celery import Celery

    app = Celery("bench", broker=REDIS_URL, backend=REDIS_URL)
    app.conf.broker_connection_retry_on_startup = True
    return app, app.task(name=TASK)(_post_sync)


@functools.cache
def _taskiq(nats_url: str) -> tuple["AsyncBroker", "AsyncTaskiqDecoratedTask[Any, Any]"]:
    """The taskiq broker on the bench's nats-server, and its task."""
    from taskiq_nats import PullBasedJetStreamBroker
    from taskiq_redis import RedisAsyncResultBackend

    backend: RedisAsyncResultBackend[Answer] = RedisAsyncResultBackend(REDIS_URL)
    broker = PullBasedJetStreamBroker(nats_url).with_result_backend(backend)
    return broker, broker.register_task(_post_async, task_name=TASK)


def taskiq_broker() -> "AsyncBroker":
    """``taskiq worker bench.task_queues:taskiq_broker``: the broker on the bench's server."""
    return _taskiq(os.environ[NATS_URL_VARIABLE])[0]


def __getattr__(name: str) -> Any:
    """``celery -A bench.task_queues:celery_app`` finds the app here, built when asked
    for, so that neither the taskiq worker nor an importer of this module loads Celery
    (a worker's memory is measured)."""
    if name == "celery_app":
        return _celery()[0]
    raise AttributeError(name)


# The client side of a call, and the calls as the phases make them.


def _celery_call(url: str, arguments: dict[str, Any], give_up_at: float) -> Answer:
    """On a thread of its own: the subscription ``delay`` makes is this thread's backend's."""
    from celery.exceptions import TimeoutError as CeleryTimeout

    timeout_s = give_up_at - time.monotonic()
    if timeout_s <= 0:
        raise TimeoutError  # waited for a thread past the phase's end: never enqueued
    result = _celery()[1].delay(url, arguments)
    try:
        answer: Answer = result.get(timeout=timeout_s)
    except CeleryTimeout as exc:
        raise TimeoutError from exc
    return answer


async def _taskiq_call(
    nats_url: str, url: str, arguments: dict[str, Any], give_up_at: float
) -> Answer:
    """Kicks the task, then polls for its result."""
    from taskiq.exceptions import TaskiqResultTimeoutError

    timeout_s = give_up_at - time.monotonic()
    if timeout_s <= 0:
        raise TimeoutError  # wait_result would take it for no timeout at all
    handle = await _taskiq(nats_url)[1].kiq(url, arguments)
    try:
        result = await handle.wait_result(check_interval=TASKIQ_CHECK_INTERVAL_S, timeout=timeout_s)
    except TaskiqResultTimeoutError as exc:
        raise TimeoutError from exc
    result.raise_for_error()
    answer: Answer = result.return_value
    return answer


class QueueCaller:
    """Enqueues a call and waits for its result: the latency in ms, or None (failed, or
    no result in time: ``late``)."""

    def __init__(
        self,
        send: Send,
        url: str,
        arguments: Arguments,
        timeout_s: float,
        deadline: float | None = None,
    ) -> None:
        self.send = send
        self.url = url
        self.arguments = arguments
        self.timeout_s = timeout_s
        self.deadline = deadline  # a phase's end on the monotonic clock, else per call
        self.failed = 0
        self.late = 0

    async def __call__(self, index: int) -> float | None:
        started = time.perf_counter()
        give_up_at = (
            self.deadline if self.deadline is not None else time.monotonic() + self.timeout_s
        )
        try:
            answer = await self.send(self.url, self.arguments(index), give_up_at)
        except TimeoutError:
            self.late += 1
            return None
        except Exception as exc:  # whatever the queue raised: the call failed, the run goes on
            self.failed += 1
            log.warning("call %d failed: %r", index, exc)
            return None
        if not isinstance(answer, dict) or "slots" not in answer:  # not the API's answer
            self.failed += 1
            log.warning("call %d answered %r", index, answer)
            return None
        return (time.perf_counter() - started) * 1000


# The queues: workers started, a client ready, everything stopped afterwards.


@dataclass(frozen=True)
class Queue:
    """A queue ready for calls: its workers running, its client connected."""

    name: str
    worker: "subprocess.Popen[bytes]"  # the root of the workers' process tree
    log: Path  # the workers' output
    send: Send


def _start_worker(
    command: list[str], log_path: Path, env: dict[str, str]
) -> "subprocess.Popen[bytes]":
    with log_path.open("ab") as output:
        return subprocess.Popen(
            command,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO), **env},
            stdout=output,
            stderr=subprocess.STDOUT,
            # A process group of its own: what of the pool outlives its parent is killed with it.
            start_new_session=True,
            preexec_fn=die_with_parent,
        )


def _stop_worker(worker: "subprocess.Popen[bytes]") -> None:
    """SIGTERM (a warm shutdown: running tasks finish), then SIGKILL to the whole group."""
    worker.terminate()
    with suppress(subprocess.TimeoutExpired):
        worker.wait(timeout=STOP_TIMEOUT_S)
    with suppress(ProcessLookupError):  # nothing left: every process stopped
        os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()


def _flush_redis() -> None:
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()


@asynccontextmanager
async def _celery_queue(data_dir: Path, threads: int) -> AsyncIterator[Queue]:
    command = [
        *(sys.executable, "-m", "celery", "-A", "bench.task_queues:celery_app", "worker"),
        *("-P", "prefork", "-c", str(CELERY_PROCESSES), "--loglevel", "WARNING"),
    ]
    log_path = data_dir / "celery-worker.log"
    worker = _start_worker(command, log_path, {})
    pool = ThreadPoolExecutor(threads, thread_name_prefix="celery-call")
    loop = asyncio.get_running_loop()

    async def send(url: str, arguments: dict[str, Any], give_up_at: float) -> Answer:
        return await loop.run_in_executor(pool, _celery_call, url, arguments, give_up_at)

    try:
        yield Queue(CELERY, worker, log_path, send)
    finally:
        await asyncio.to_thread(pool.shutdown, cancel_futures=True)
        await asyncio.to_thread(_stop_worker, worker)
        # The threads' result backends are in reference cycles: collected now, their
        # Redis connections (2,000 after a burst of 1,000) closed, rather than in the
        # collections of whatever is measured next, which it slowed by half.
        gc.collect()


@asynccontextmanager
async def _taskiq_queue(data_dir: Path) -> AsyncIterator[Queue]:
    server = NatsServer(data_dir / "nats")
    nats_url = server.start()
    try:
        broker = _taskiq(nats_url)[0]
        await broker.startup()  # the stream and the durable, before the worker asks for them
        try:
            command = [
                *(sys.executable, "-m", "taskiq", "worker", "bench.task_queues:taskiq_broker"),
                *("--workers", "1", "--log-level", "WARNING"),
            ]
            log_path = data_dir / "taskiq-worker.log"
            worker = _start_worker(command, log_path, {NATS_URL_VARIABLE: nats_url})
            try:
                send = functools.partial(_taskiq_call, nats_url)
                yield Queue(TASKIQ, worker, log_path, send)
            finally:
                await asyncio.to_thread(_stop_worker, worker)
        finally:
            await broker.shutdown()
    finally:
        await server.astop()


# The phases, as bench.baseline runs them.


async def measure(plan: "Plan", api_url: str, data_dir: Path) -> list[QueueFigures]:
    """Celery, then taskiq: each queue's figures, its workers stopped before the next starts."""
    # Enough threads for every call ever outstanding, up to the cap.
    threads = min(CELERY_THREADS, max(*plan.in_flight, plan.at_once))
    _flush_redis()  # no task or result of an earlier run
    try:
        async with _celery_queue(data_dir, threads) as celery:
            figures = [await _measure(celery, plan, api_url)]
        async with _taskiq_queue(data_dir) as taskiq:
            figures.append(await _measure(taskiq, plan, api_url))
    finally:
        _flush_redis()  # nor of this one: the burst's calls never taken, the results
    return figures


async def _measure(queue: Queue, plan: "Plan", api_url: str) -> QueueFigures:
    from bench.plan import arguments

    fast = QueueCaller(queue.send, f"{api_url}/slots", arguments, plan.result_timeout_s)
    await _wait_ready(queue, fast)
    await load.one_at_a_time(fast, plan.warmup)
    sequential, _ = await load.one_at_a_time(fast, plan.one_at_a_time)
    loops, costs = [], {}
    for in_flight in plan.in_flight:
        loop, costs[in_flight] = await _costed_loop(
            fast, plan.loop_calls, in_flight, queue.worker.pid
        )
        loops.append(loop)
    burst, delayed = await _burst(queue, plan, api_url, arguments)
    cpu_ms_per_call, rss_mb = costs[plan.measured_in_flight]
    baseline = Baseline(
        one_at_a_time=latency([ms for ms in sequential if ms is not None]),
        loops=loops,
        burst=burst,
        failed=fast.failed + fast.late + delayed.failed,
    )
    return QueueFigures(queue.name, baseline, rss_mb, cpu_ms_per_call, burst_done=not delayed.late)


async def _wait_ready(queue: Queue, call: QueueCaller) -> None:
    """A first call, which waits for the workers to start: its failure is theirs, not a call's."""
    try:
        await queue.send(call.url, call.arguments(0), time.monotonic() + STARTUP_TIMEOUT_S)
    except Exception as exc:
        raise RuntimeError(f"{queue.name}: no answer from its workers (see {queue.log})") from exc


async def _costed_loop(
    call: QueueCaller, calls: int, in_flight: int, root: int
) -> tuple[Loop, tuple[float, float]]:
    """The loop, and the workers' CPU ms per call in it and summed peak RSS MB after it."""
    # Read now: a pool's processes may have been replaced since the last loop.
    workers = {str(pid): pid for pid in [root, *descendants(root, children_of())]}
    before = CpuSnapshot.take(workers)
    samples, elapsed = await load.closed_loop(call, calls, in_flight)
    cpu_ms = sum(before.ms_per_call(CpuSnapshot.take(workers), calls).values())
    rss_mb = sum(peak_rss_mb(pid) for pid in workers.values())
    kept = [ms for ms in samples if ms is not None]
    return Loop(in_flight, calls, calls / elapsed, latency(kept).p99_ms), (cpu_ms, rss_mb)


async def _burst(
    queue: Queue, plan: "Plan", api_url: str, arguments: Arguments
) -> tuple[Burst, QueueCaller]:
    """Every call at once; the wall time until the last result, or the limit if one never came."""
    limit_s = min(plan.at_once_timeout_s, BURST_LIMIT_S)
    url = f"{api_url}/delayed?delay_s={plan.delay_s}"
    deadline = time.monotonic() + limit_s
    delayed = QueueCaller(queue.send, url, arguments, limit_s, deadline)
    _, wall_s = await load.at_once(delayed, plan.at_once)
    return Burst(plan.at_once, plan.delay_s, limit_s if delayed.late else wall_s), delayed


# python -m bench.task_queues


def render(plan: "Plan", figures: list[QueueFigures]) -> str:
    """One row per figure, a column per queue."""
    columns = [_labels(plan), *(_column(queue) for queue in figures)]
    widths = [max(len(cell) for cell in column) for column in columns]
    lines = [_line(row, widths) for row in zip(*columns, strict=True)]
    title = f"Task queues doing the benchmark's calls: {plan.name} plan, {os.cpu_count()} CPUs"
    return "\n".join([title, "", *lines])


def _line(row: tuple[str, ...], widths: list[int]) -> str:
    """The label to the left, the figures to the right."""
    label, *cells = row
    figures = (cell.rjust(width) for cell, width in zip(cells, widths[1:], strict=True))
    return "  ".join([label.ljust(widths[0]), *figures])


def _labels(plan: "Plan") -> list[str]:
    loops = [f"{n} in flight {figure}" for n in plan.in_flight for figure in ("calls/s", "p99 ms")]
    return [
        "figure",
        f"one at a time p50 ms ({plan.one_at_a_time} calls)",
        "one at a time p99 ms",
        *loops,
        f"{plan.at_once:,} at once (API {plan.delay_s:g} s) wall s",
        f"workers CPU ms/call ({plan.measured_in_flight} in flight)",
        "workers peak RSS MB (summed)",
        "failed calls",
    ]


def _column(queue: QueueFigures) -> list[str]:
    figures = queue.baseline
    loops = [cell for loop in figures.loops for cell in (_n(loop.calls_per_s, 0), _n(loop.p99_ms))]
    wall_s = figures.burst.wall_s
    return [
        queue.name,
        _n(figures.one_at_a_time.p50_ms),
        _n(figures.one_at_a_time.p99_ms),
        *loops,
        _n(wall_s) if queue.burst_done else f"not done in {wall_s:g} s",
        _n(queue.cpu_ms_per_call),
        _n(queue.peak_rss_mb, 1),
        str(figures.failed),
    ]


def _n(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


async def _run(plan: "Plan") -> list[QueueFigures]:
    from bench.api import ApiProcess

    api = ApiProcess()
    api.start()
    try:
        with tempfile.TemporaryDirectory(prefix="midcall-task-queues-") as data_dir:
            return await measure(plan, api.url, Path(data_dir))
    finally:
        api.stop()


def main(argv: list[str] | None = None) -> int:
    from bench.plan import FULL, QUICK

    parser = argparse.ArgumentParser(prog="python -m bench.task_queues", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="the quick plan's calls")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(name)s: %(message)s")
    raise_fd_limit()
    plan = QUICK if args.quick else FULL
    figures = asyncio.run(_run(plan))
    print(render(plan, figures), flush=True)
    return 1 if any(f.baseline.failed for f in figures) else 0


if __name__ == "__main__":
    sys.exit(main())
