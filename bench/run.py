"""``python -m bench.run``: Midcall against a direct HTTP call, on this machine, in one table.

Everything runs co-located: a loopback API in its own process, the baseline
(httpx straight to the API, in this process), then the real fabric (an
embedded nats-server and every service process) driven by a runtime in this
process: HTTP tools, then python tools (the same request made by a function
in the code-executor's sandbox, against the issue's bounds). Between the two,
Celery and taskiq do the same calls (``bench.task_queues``), so every
comparison is within one run. The table and the targets go to stdout,
progress to stderr, the figures to JSON. Exits non-zero if a call was lost
(no result, or never billed).

Options: ``--quick`` (about 40 s; 2 minutes with the queues), ``--no-queues``,
``--replicas N`` (processes of each of
dispatcher, http-executor, code-executor and result-injector), ``--nats-nodes
N`` (a JetStream cluster of N nodes, every stream RN), ``--json PATH``. The
services read their usual ``MIDCALL_*`` settings from the environment, e.g.
``MIDCALL_EXECUTOR_CONCURRENCY``; the JSON records the ones that bound load.
"""

import argparse
import asyncio
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

from bench import baseline, task_queues
from bench.api import ApiProcess
from bench.fabric import running
from bench.midcall import Driver
from bench.plan import AGENT, FULL, QUICK, Plan
from bench.procstats import raise_fd_limit
from bench.report import Report, render, write_json
from bench.runtime import BenchRuntime
from shared.settings import Settings

DEFAULT_JSON = Path(__file__).with_name("results.json")
log = logging.getLogger("bench")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer calls: about 40 seconds")
    parser.add_argument("--replicas", type=int, default=1, help="processes per scalable service")
    parser.add_argument(
        "--nats-nodes",
        type=int,
        default=1,
        help="NATS as a cluster of this many nodes on loopback, every stream in as many copies",
    )
    parser.add_argument(
        "--no-queues", action="store_true", help="measure no task queue beside Midcall"
    )
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where the figures go")
    return parser


def _service_limits() -> dict[str, int]:
    settings = Settings()
    return {
        "dispatcher_concurrency": settings.dispatcher_concurrency,
        "executor_concurrency": settings.executor_concurrency,
        "injector_concurrency": settings.injector_concurrency,
        "executor_max_connections": settings.max_connections,
        "sandbox_calls_per_account": settings.sandbox_calls_per_account,
    }


async def run(plan: Plan, queues: bool = True) -> Report:
    started = time.perf_counter()
    api = ApiProcess()
    api.start()
    try:
        log.info("baseline: direct httpx calls to %s", api.url)
        direct = await baseline.measure(plan, api.url)
        measured = []
        if queues:
            log.info("task queues: Celery, then taskiq")
            with tempfile.TemporaryDirectory(prefix="midcall-queues-") as queues_dir:
                measured = await task_queues.measure(plan, api.url, Path(queues_dir))
        with tempfile.TemporaryDirectory(prefix="midcall-bench-") as data_dir:
            async with running(Path(data_dir), plan.replicas, plan.nats_nodes) as fabric:
                await fabric.register(api.url, plan.delay_s)
                log.info("midcall: fabric up, %d replica(s)", plan.replicas)
                options = fabric.runtime_options()
                runtime = await BenchRuntime.connect(fabric.nats_url, AGENT, **options)
                ops = await fabric.ops()
                try:
                    driver = Driver(runtime, ops.jetstream(), fabric, plan, api.pid, api.url)
                    through = await driver.measure()
                finally:
                    await runtime.close()
                    await ops.close()
    finally:
        api.stop()
    elapsed = time.perf_counter() - started
    cpus = os.cpu_count() or 0
    return Report(plan, cpus, _service_limits(), direct, through, elapsed, measured)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(name)s: %(message)s")
    log.setLevel(logging.INFO)
    raise_fd_limit()
    plan = (QUICK if args.quick else FULL).with_replicas(args.replicas, args.nats_nodes)
    report = asyncio.run(run(plan, queues=not args.no_queues))
    print(render(report), flush=True)
    write_json(report, args.json)
    return 1 if report.midcall.losses.lost else 0


if __name__ == "__main__":
    sys.exit(main())
