"""Prometheus metrics: what the services count, and where a scraper reads them.

The registry and billing serve ``/metrics`` on their REST port; the others
on ``MIDCALL_METRICS_PORT`` when it is set (compose gives each container the
same one), with ``/healthz`` beside it: 200 while the service is connected to
NATS and taking work, 503 otherwise (a readiness probe). Counting costs a few
microseconds a message.
"""

import json
import logging
import threading
from collections.abc import Callable, Iterable
from datetime import datetime
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import Counter, Gauge, Histogram, make_wsgi_app

from shared.contract.events import utcnow

log = logging.getLogger("midcall.metrics")

# Seconds: a pending should take milliseconds, a result up to the 60 s deadline.
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

CALLS = Counter(
    "midcall_calls", "Calls ended, by tool, status and error code", ["tool", "status", "code"]
)
PENDING_SECONDS = Histogram(
    "midcall_pending_seconds",
    "From a call stored in JetStream to its pending",
    [],
    buckets=LATENCY_BUCKETS,
)
RESULT_SECONDS = Histogram(
    "midcall_result_seconds", "From a call accepted to its result", [], buckets=LATENCY_BUCKETS
)
IN_FLIGHT = Gauge("midcall_in_flight", "Messages in hand, by consumer", ["consumer"])
REDELIVERIES = Counter(
    "midcall_redeliveries", "Messages delivered again, by consumer", ["consumer"]
)
LEASES_LOST = Counter(
    "midcall_leases_lost",
    "Messages left unsettled by a process that froze past their ack wait, by consumer",
    ["consumer"],
)
DEAD_LETTERS = Counter("midcall_dead_letters", "Messages set aside, by stage", ["stage"])
RETRIES = Counter("midcall_retries", "HTTP attempts beyond a call's first, by tool", ["tool"])
BREAKER_OPEN = Gauge("midcall_breaker_open", "1 while a destination host is given a rest", ["host"])
SANDBOXES = Gauge("midcall_sandboxes", "Accounts' jails running (code-executor)", [])
SANDBOX_STARTS = Histogram(
    "midcall_sandbox_start_seconds",
    "A jail's start (a call's cold start)",
    [],
    buckets=LATENCY_BUCKETS,
)
FUNCTION_ENDINGS = Counter(
    "midcall_function_endings",
    "Python tools' runs, by how they ended: result, exception, memory, cpu, output, timeout...",
    ["tool", "ending"],
)


def seconds_since(moment: datetime) -> float:
    return max(0.0, (utcnow() - moment).total_seconds())


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """A scrape or a probe every few seconds is no news."""


def serve(port: int | None, host: str, ready: Callable[[], bool] = lambda: False) -> None:
    """Serve ``/metrics`` and ``/healthz`` (``ready()``) on ``port`` (None: not at all),
    in a thread of their own; a taken port is logged, not fatal."""
    if port is None:
        return
    exposed = make_wsgi_app()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/healthz":
            body: Iterable[bytes] = exposed(environ, start_response)
            return body
        ok = ready()
        start_response(
            "200 OK" if ok else "503 Service Unavailable", [("Content-Type", "application/json")]
        )
        return [json.dumps({"status": "ok" if ok else "unavailable"}).encode()]

    try:
        server = make_server(host, port, app, _Server, _Quiet)
    except OSError as exc:
        log.warning("metrics not served on %s:%d: %s", host, port, exc)
        return
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
