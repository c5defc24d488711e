"""A function's HTTP requests, sent for it: the only way out of the sandbox.

The same rules as an HTTP tool's request: the destination policy (loopback,
private, link-local and metadata addresses refused unless
``MIDCALL_ALLOW_DESTINATIONS`` allows them, checked on the resolved address
as the connection is made), the response cap, no redirects followed (the
function's httpx may follow one, as a new request that is checked again),
the call's deadline as the longest wait, and a client span each, whose
``traceparent`` the API receives.
"""

from datetime import datetime
from typing import Any

from opentelemetry import propagate
from opentelemetry.trace import SpanKind, Status, StatusCode
from yarl import URL

from services.code_executor.sandbox.frames import Frame
from shared.calls.client import Sender, TransportError
from shared.contract.errors import CallRejected
from shared.contract.events import utcnow
from shared.observability.tracing import tracer
from shared.security.destinations import DestinationPolicy, blocked_cause

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Set by the connection, not by the function: the egress's own client sends them.
NOT_FORWARDED = frozenset(
    {"host", "content-length", "connection", "keep-alive", "transfer-encoding", "te", "upgrade"}
    | {"proxy-connection", "proxy-authorization", "accept-encoding", "traceparent", "tracestate"}
)
# The body handed back is already decompressed and whole.
NOT_RETURNED = frozenset({"content-length", "content-encoding", "transfer-encoding", "connection"})
DEFAULT_TIMEOUT_S = 10.0


class Egress:
    def __init__(self, sender: Sender, policy: DestinationPolicy) -> None:
        self.sender = sender
        self.policy = policy

    async def send(self, deadline_at: datetime, request: dict[str, Any], body: bytes) -> Frame:
        """The reply frame to one request: ``status``/``headers`` and the body, or ``error``."""
        method = str(request.get("method", "")).upper()
        try:
            url = URL(str(request.get("url", "")), encoded=True)
        except ValueError:
            return _refused("connect", "not a URL")
        if method not in METHODS or url.scheme not in ("http", "https") or not url.host:
            return _refused("connect", f"{method} {url.scheme}:// requests cannot be sent")
        with tracer().start_as_current_span(f"{method}", kind=SpanKind.CLIENT) as span:
            span.set_attributes({"http.request.method": method, "server.address": url.host})
            reply = await self._send(method, url, request, body, _timeout(request, deadline_at))
            if "error" in reply[0]:
                span.set_status(Status(StatusCode.ERROR, reply[0]["error"]))
            else:
                span.set_attribute("http.response.status_code", reply[0]["status"])
            return reply

    async def _send(
        self, method: str, url: URL, request: dict[str, Any], body: bytes, timeout_s: float
    ) -> Frame:
        try:
            headers = _forwarded(request.get("headers", []))
        except (TypeError, ValueError):
            return _refused("invalid", "the request's headers are not name-value pairs")
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        try:
            self.policy.check_literal(str(url))
            answer = await self.sender.exchange(
                method, url, [*headers, *carrier.items()], body or None, timeout_s
            )
        except CallRejected as exc:
            return _refused("blocked", _why_blocked(url.host, exc.details))
        except TimeoutError:
            return _refused("timeout", f"no answer from {url.host} within {timeout_s:.1f} s")
        except TransportError as exc:
            refused = blocked_cause(exc)
            if refused is not None:
                return _refused("blocked", str(refused))
            return _refused("connect", f"{url.host} could not be reached ({type(exc).__name__})")
        except ValueError as exc:
            # aiohttp refuses a control character in a header (header injection): answered,
            # or the function would wait for a reply until its deadline.
            return _refused("invalid", f"the request could not be sent: {exc}")
        if answer.truncated:
            cap = self.sender.max_response_bytes
            return _refused("too_large", f"the response of {url.host} is larger than {cap} bytes")
        kept = [[k, v] for k, v in answer.headers.items() if k.lower() not in NOT_RETURNED]
        return {"status": answer.status, "headers": kept}, answer.body


def _forwarded(headers: Any) -> list[tuple[str, str]]:
    """The function's headers that are sent (TypeError or ValueError when they are not name,
    value pairs: the frame is the function's process's, which may write one of its own)."""
    pairs = [(str(k), str(v)) for k, v in headers]
    return [(k, v) for k, v in pairs if k.lower() not in NOT_FORWARDED]


def _timeout(request: dict[str, Any], deadline_at: datetime) -> float:
    asked = request.get("timeout_s")
    wanted = float(asked) if isinstance(asked, int | float) and asked > 0 else DEFAULT_TIMEOUT_S
    return max(0.0, min(wanted, (deadline_at - utcnow()).total_seconds()))


def _why_blocked(host: str | None, details: Any) -> str:
    address = details.get("address") if isinstance(details, dict) else None
    shown = f"{host} ({address})" if address and address != host else str(host)
    return (
        f"{shown} is not an address tools may call: loopback, private, link-local and "
        "metadata addresses are refused unless the operator allows them"
    )


def _refused(kind: str, message: str) -> Frame:
    return {"error": kind, "message": message}, b""
