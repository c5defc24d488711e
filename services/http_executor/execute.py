"""Running one work item: render, check the destination, send with retries, report.

Transport failures are classified here, where they enter: timeouts and
connection errors are transient (retried when the tool's policy says so,
always within the call's deadline); everything else is final.
"""

import asyncio
import random
import time
from dataclasses import replace
from datetime import datetime
from urllib.parse import urlsplit

from opentelemetry import propagate
from opentelemetry.trace import SpanKind, Status, StatusCode

from services.http_executor.client import Sender, TransportError
from services.http_executor.destinations import DestinationPolicy, blocked, blocked_cause
from services.http_executor.render import RenderedRequest, render_request
from services.http_executor.signing import signature_headers
from shared.errors import CallRejected, ErrorCode
from shared.events import ErrorInfo, ExecuteRequest, ExecutionOutcome, HttpResponse, utcnow
from shared.tracing import tracer


class Executor:
    def __init__(self, sender: Sender, policy: DestinationPolicy, secrets: dict[str, str]) -> None:
        self.sender = sender
        self.policy = policy
        self.secrets = secrets

    async def run(self, work: ExecuteRequest) -> ExecutionOutcome:
        started = time.perf_counter()
        answer: HttpResponse | CallRejected
        try:
            request = render_request(work, self.secrets)
            self.policy.check_literal(request.url)
        except CallRejected as failure:
            attempts, answer = 0, failure
        else:
            attempts, answer = await self._send_with_retries(work, request)
        outcome = ExecutionOutcome(
            request=work,
            attempts=attempts,
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
        )
        if isinstance(answer, CallRejected):
            outcome.failure = ErrorInfo(
                code=answer.code, message=answer.message, details=answer.details
            )
        else:
            outcome.response = answer
        return outcome

    async def _send_with_retries(
        self, work: ExecuteRequest, request: RenderedRequest
    ) -> tuple[int, HttpResponse | CallRejected]:
        attempt = 0
        while True:
            attempt += 1
            answer: HttpResponse | CallRejected
            try:
                answer = await self._attempt(work, request)
            except CallRejected as failure:
                answer = failure
            delay = _retry_delay(work, attempt, _retry_reason(answer))
            if delay is None:
                return attempt, answer
            await asyncio.sleep(delay)

    async def _attempt(self, work: ExecuteRequest, request: RenderedRequest) -> HttpResponse:
        budget = _remaining(work.deadline_at)
        with tracer().start_as_current_span(f"HTTP {request.method}", kind=SpanKind.CLIENT) as span:
            url = urlsplit(request.url)
            span.set_attributes(
                {
                    "http.request.method": request.method,
                    "server.address": url.hostname or "",
                    "url.path": url.path,
                }
            )
            headers = {**request.headers, **self._signature(work, request)}
            propagate.inject(headers)  # the API sees the same trace
            try:
                response = await self.sender.send(replace(request, headers=headers), budget)
            except TimeoutError as exc:
                span.set_status(Status(StatusCode.ERROR, "timeout"))
                raise _timeout(work) from exc
            except TransportError as exc:
                # The deadline is ours (asyncio.timeout), the transport has none, so
                # any client error is a connection failure.
                refused = blocked_cause(exc)
                if refused is not None:
                    raise blocked(refused.host, refused.address) from exc
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                raise _unreachable(work) from exc
            span.set_attribute("http.response.status_code", response.status)
            if response.status >= 500:
                span.set_status(Status(StatusCode.ERROR))
            return response

    @staticmethod
    def _signature(work: ExecuteRequest, request: RenderedRequest) -> dict[str, str]:
        # Signed per attempt: a Standard Webhooks timestamp must be fresh.
        signing = work.tool.request.signing
        if signing is None:
            return {}
        return signature_headers(
            signing, list(request.signing_secrets), work.call.call_id, request.body or b"", utcnow()
        )


def _retry_reason(answer: HttpResponse | CallRejected) -> str | None:
    if isinstance(answer, CallRejected):
        return answer.code.value
    return "http_5xx" if answer.status >= 500 else None


def _retry_delay(work: ExecuteRequest, attempt: int, reason: str | None) -> float | None:
    """How long to wait before trying again, or None: by policy, and only within the deadline."""
    retry = work.tool.request.retry
    if reason not in retry.on or attempt >= retry.attempts:
        return None
    delay = _backoff(retry.backoff_s, attempt)
    return delay if _remaining(work.deadline_at) > delay else None


def _remaining(deadline_at: datetime) -> float:
    return max(0.0, (deadline_at - utcnow()).total_seconds())


def _backoff(base: float, attempt: int) -> float:
    # Exponential with jitter, so replicas retrying one API do not stampede it.
    return float(base * 2 ** (attempt - 1) * random.uniform(0.5, 1.5))


def _timeout(work: ExecuteRequest) -> CallRejected:
    budget = (work.deadline_at - work.accepted_at).total_seconds()
    return CallRejected(
        ErrorCode.TIMEOUT,
        f"The {work.tool.name} service did not answer within {budget:g} seconds. "
        "Tell the caller it is taking too long and offer to try again.",
        {"timeout_s": budget},
    )


def _unreachable(work: ExecuteRequest) -> CallRejected:
    return CallRejected(
        ErrorCode.CONNECTION_ERROR,
        f"The {work.tool.name} service could not be reached. Tell the caller "
        "there is a technical problem and offer to try again later.",
    )


def cancelled(work: ExecuteRequest) -> ExecutionOutcome:
    return ExecutionOutcome(
        request=work,
        failure=ErrorInfo(
            code=ErrorCode.CANCELLED, message="The conversation ended before the action finished."
        ),
    )


def too_large(outcome: ExecutionOutcome) -> ExecutionOutcome:
    assert outcome.response is not None
    truncated = outcome.response.model_copy(update={"body": "", "truncated": True})
    return outcome.model_copy(update={"response": truncated})
