"""Running one work item: render, check the destination, send with retries, report.

Transport failures are classified here, where they enter: timeouts and
connection errors are transient (retried when the tool's policy says so,
always within the call's deadline); everything else is final.
"""

import asyncio
import logging
import random
import time
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from opentelemetry import propagate
from opentelemetry.trace import SpanKind, Status, StatusCode

from services.http_executor.breaker import Breakers
from services.http_executor.completions import Completions
from services.http_executor.retries import Attempt, retry_after_s, retry_delay, status_reason
from services.http_executor.signing import signature_headers
from services.http_executor.tool_hosts import check_allowed_host, check_chosen_host
from shared.calls.client import NotConnected, Sender, TransportError
from shared.calls.redaction import Redaction
from shared.calls.render import RenderedRequest, render_cancel, render_request
from shared.calls.results import error_info, timed_out
from shared.contract.errors import CallRejected, ErrorCode
from shared.contract.events import (
    ExecuteRequest,
    ExecutionOutcome,
    HttpAttempt,
    HttpResponse,
    utcnow,
)
from shared.fabric.consumer import ensure_held
from shared.observability.metrics import RETRIES
from shared.observability.tracing import tracer
from shared.security.callback_tokens import CallbackHeaders, grant_for
from shared.security.destinations import DestinationPolicy, blocked, blocked_cause
from shared.security.secret_scope import SecretScope

logger = logging.getLogger("midcall.http_executor")
# Failures the tool's retry policy may name (the rest are final).
TRANSIENT_CODES = frozenset({ErrorCode.CONNECTION_ERROR, ErrorCode.TIMEOUT})
# What counts against a host's circuit: it did not answer, or its gateway said it is down.
BREAKING = frozenset({"connection_error", "timeout", "http_5xx"})
# Details of a connection error that happened before any byte of the request was sent.
NOT_SENT = {"request_sent": False}


class Executor:
    def __init__(
        self,
        sender: Sender,
        policy: DestinationPolicy,
        secrets: SecretScope | Mapping[str, str],
        breakers: Breakers | None = None,
        callbacks: CallbackHeaders | None = None,
        completions: Completions | None = None,
    ) -> None:
        """``secrets``: a scope, or the platform's secrets alone (no account secrets).
        ``callbacks``: the token and URL every request carries; ``completions``: where a
        call whose API answered 202 waits (both None: no callbacks, as in unit tests)."""
        self.sender = sender
        self.policy = policy
        self.secrets = secrets if isinstance(secrets, SecretScope) else SecretScope(secrets)
        self.breakers = breakers or Breakers()
        self.callbacks = callbacks
        self.completions = completions

    async def run(self, work: ExecuteRequest) -> ExecutionOutcome:
        started = time.perf_counter()
        log: list[HttpAttempt] = []
        try:
            check_chosen_host(work)  # before any secret is opened
            secrets = await self.secrets.for_work(work)
        except CallRejected as failure:
            return _outcome(work, failure, log, started)
        # From here any text may hold a secret: whatever leaves the executor has them hidden.
        hidden = Redaction(tuple(secrets.values()))
        with hidden.hiding():
            answer = await self._render_and_send(work, secrets, log)
        # An API that echoes a secret (a token in its error text) must not have it
        # reach the result, the failed call kept or the LLM.
        answer = (
            hidden.failure(answer) if isinstance(answer, CallRejected) else hidden.response(answer)
        )
        return _outcome(work, answer, log, started)

    async def _render_and_send(
        self, work: ExecuteRequest, secrets: dict[str, str], log: list[HttpAttempt]
    ) -> HttpResponse | CallRejected:
        completions = self.completions if work.tool.http().callback_timeout_s else None
        key = grant_for(work).completion_key if completions is not None else ""
        if completions is not None:
            earlier = await self._accepted_before(work, completions, key)
            if earlier is not None:
                return earlier
        try:
            request = self._checked(work, render_request(work, secrets))
        except CallRejected as failure:
            return failure
        answer = await self._send_with_retries(work, request, log)
        if len(log) > 1:
            RETRIES.labels(work.tool.name).inc(len(log) - 1)
        if completions is None or not _accepted(answer):
            return answer
        # 202: the API reports through its callback token; the deadline still bounds the call.
        await completions.accept(work)
        return await _completion(work, completions, key)

    @staticmethod
    async def _accepted_before(
        work: ExecuteRequest, completions: Completions, key: str
    ) -> HttpResponse | CallRejected | None:
        """A call run again whose API had accepted it (its executor stopped while it
        waited): its completion, stored or still to come, without sending it again."""
        stored = await completions.stored(key)
        if stored is not None:
            return stored
        if await completions.was_accepted(key):
            return await _completion(work, completions, key)
        return None

    async def _send_with_retries(
        self, work: ExecuteRequest, request: RenderedRequest, log: list[HttpAttempt]
    ) -> HttpResponse | CallRejected:
        """Send until an answer is final; each attempt made is appended to ``log``."""
        # host:port, without any user:password a URL may carry.
        host = urlsplit(request.url).netloc.rpartition("@")[2]
        while True:
            if not self.breakers.allow(host):
                return _resting(work)
            # Not sent by a process that froze past its ack wait: the work item may be
            # another replica's now (LeaseLost leaves it to JetStream).
            ensure_held()
            answer, attempt = await self._attempt(work, request, len(log) + 1)
            log.append(_logged(attempt, answer))
            self.breakers.record(
                host, healthy=attempt.reason not in BREAKING, shown=request.hidden.text(host)
            )
            delay = retry_delay(
                work.tool.http().retry,
                request.method,
                attempt,
                _remaining(work.deadline_at),
                random.uniform(0.5, 1.5),
            )
            if delay is None:
                return answer
            await asyncio.sleep(delay)

    async def _attempt(
        self, work: ExecuteRequest, request: RenderedRequest, number: int
    ) -> tuple[HttpResponse | CallRejected, Attempt]:
        started = time.monotonic()
        try:
            response = await self._send(work, request, _remaining(work.deadline_at))
        except CallRejected as failure:
            # A refused or unresolvable connection never reached the API.
            sent = failure.code is not ErrorCode.CONNECTION_ERROR or failure.details != NOT_SENT
            reason = failure.code.value if failure.code in TRANSIENT_CODES else None
            return failure, Attempt(number, reason, sent, time.monotonic() - started)
        attempt = Attempt(
            number,
            status_reason(response.status),
            True,
            time.monotonic() - started,
            retry_after_s(response.retry_after, utcnow()),
        )
        return response, attempt

    def _checked(self, work: ExecuteRequest, request: RenderedRequest) -> RenderedRequest:
        """``request``, if its destination is one the tool and the policy allow."""
        check_allowed_host(work, request)
        self.policy.check_literal(request.url, request.secret_host)
        return request

    async def _send(
        self, work: ExecuteRequest, request: RenderedRequest, budget_s: float
    ) -> HttpResponse:
        with tracer().start_as_current_span(
            f"HTTP {request.method}",
            kind=SpanKind.CLIENT,
            # Recorded below instead, with the secrets hidden: a transport's error names the host.
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            url = urlsplit(request.url)
            span.set_attributes(
                {
                    "http.request.method": request.method,
                    # A webhook's path may be its secret, and a host may be one.
                    "server.address": request.hidden.text(url.hostname or ""),
                    "url.path": request.hidden.text(url.path),
                }
            )
            try:
                response = await self._exchange(work, request, budget_s)
            except Exception as exc:
                request.hidden.record(span, exc)
                raise
            span.set_attribute("http.response.status_code", response.status)
            if response.status >= 500:
                span.set_status(Status(StatusCode.ERROR))
            return response

    async def _exchange(
        self, work: ExecuteRequest, request: RenderedRequest, budget_s: float
    ) -> HttpResponse:
        headers = {**request.headers, **self._signature(work, request)}
        if self.callbacks is not None:
            headers |= self.callbacks.for_work(work)
        propagate.inject(headers)  # the API sees the same trace
        try:
            return await self.sender.send(replace(request, headers=headers), budget_s)
        except TimeoutError as exc:
            raise timed_out(work) from exc
        except TransportError as exc:
            # The deadline is ours (asyncio.timeout), the transport has none, so
            # any client error is a connection failure.
            refused = blocked_cause(exc)
            if refused is not None:
                raise blocked(refused.host, refused.address, request.secret_host) from exc
            raise _unreachable(work, sent=not isinstance(exc, NotConnected)) from exc

    async def stopped(self, work: ExecuteRequest) -> None:
        """The call was stopped while it ran (a cancel, its conversation's end): the tool's
        ``on_cancel``, if it has one, is sent once, within the tool's own timeout (the call
        is over: its deadline no longer bounds it). What the API answers changes nothing."""
        if work.tool.http().on_cancel is None:
            return
        try:
            secrets = await self.secrets.for_work(work)
        except CallRejected as exc:
            logger.warning(
                "call %s cancelled: its API could not be told (%s)", work.call.call_id, exc
            )
            return
        with Redaction(tuple(secrets.values())).hiding():
            await self._tell_cancelled(work, secrets)

    async def _tell_cancelled(self, work: ExecuteRequest, secrets: dict[str, str]) -> None:
        # Sent as an attempt is (span, signature, trace, errors), within the tool's timeout.
        try:
            request = self._checked(work, render_cancel(work, secrets))
            response = await self._send(work, request, work.tool.http().timeout_s)
        except CallRejected as exc:
            logger.warning(
                "call %s cancelled: its API could not be told (%s)", work.call.call_id, exc
            )
            return
        logger.info("call %s cancelled: its API answered %d", work.call.call_id, response.status)

    @staticmethod
    def _signature(work: ExecuteRequest, request: RenderedRequest) -> dict[str, str]:
        # Signed per attempt: a Standard Webhooks timestamp must be fresh.
        signing = work.tool.http().signing
        if signing is None:
            return {}
        return signature_headers(
            signing, list(request.signing_secrets), work.call.call_id, request.body or b"", utcnow()
        )


def _outcome(
    work: ExecuteRequest,
    answer: HttpResponse | CallRejected,
    log: list[HttpAttempt],
    started: float,
) -> ExecutionOutcome:
    outcome = ExecutionOutcome(
        request=work, attempts=len(log), duration_ms=_ms_since(started), attempt_log=log
    )
    if isinstance(answer, CallRejected):
        outcome.failure = error_info(answer)
    else:
        outcome.response = answer
    return outcome


async def _completion(
    work: ExecuteRequest, completions: Completions, key: str
) -> HttpResponse | CallRejected:
    completed = await completions.wait(key, work.deadline_at)
    return timed_out(work) if completed is None else completed


def _accepted(answer: HttpResponse | CallRejected) -> bool:
    return isinstance(answer, HttpResponse) and answer.status == 202


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


def _logged(attempt: Attempt, answer: HttpResponse | CallRejected) -> HttpAttempt:
    """What ops see of one attempt: when, how long, and what came back."""
    took = timedelta(seconds=attempt.took_s)
    return HttpAttempt(
        number=attempt.number,
        started_at=utcnow() - took,
        duration_ms=round(attempt.took_s * 1000, 1),
        http_status=answer.status if isinstance(answer, HttpResponse) else None,
        error=answer.code.value if isinstance(answer, CallRejected) else None,
    )


def _remaining(deadline_at: datetime) -> float:
    return max(0.0, (deadline_at - utcnow()).total_seconds())


def _unreachable(work: ExecuteRequest, sent: bool) -> CallRejected:
    return CallRejected(
        ErrorCode.CONNECTION_ERROR,
        f"The {work.tool.name} service could not be reached. Tell the caller "
        "there is a technical problem and offer to try again later.",
        None if sent else NOT_SENT,
    )


def _resting(work: ExecuteRequest) -> CallRejected:
    return CallRejected(
        ErrorCode.CONNECTION_ERROR,
        f"The {work.tool.name} service has not been answering for a while, so it was "
        "not tried just now. Tell the caller there is a technical problem and offer "
        "to try again in a few minutes.",
        {"circuit": "open"},
    )
