"""Running one work item of a python tool: its call's context in, its function's answer out.

The function's returned dict is reported as an HTTP tool's API answer would
be (a 200 with that JSON body), so the injector maps it by the tool's
response rules: a ``status: "error"`` is a ``tool_error`` with its message,
variables and ``agent_message`` work as for any tool. What goes wrong in the
sandbox is classified here, where it enters: the function's own exceptions
and limits are ``tool_error``, its deadline is ``timeout``.
"""

import json
import logging
import time
from typing import Any

from opentelemetry import trace

from services.code_executor.egress import Egress
from services.code_executor.jail import SandboxUnavailable
from services.code_executor.workers import Call, Pool
from shared.calls.binding import declared_arguments
from shared.calls.results import error_info, timed_out
from shared.contract.errors import CallRejected, ErrorCode
from shared.contract.events import (
    ExecuteRequest,
    ExecutionOutcome,
    HttpAttempt,
    HttpResponse,
    utcnow,
)
from shared.fabric.consumer import ensure_held, lease_held
from shared.fabric.conversations import ConversationVariables
from shared.fabric.executors import Stop, cancelled
from shared.observability.metrics import FUNCTION_ENDINGS
from shared.security.secret_scope import SecretScope, require_all

log = logging.getLogger("midcall.code_executor")
# What a function did wrong, in words the LLM can relay ({tool} and {message} filled in).
TOOL_ERRORS = {
    "exception": "The {tool} action failed: {message}",
    "memory": "The {tool} action used too much memory and was stopped.",
    "cpu": "The {tool} action used too much processing time and was stopped.",
    "output": "The {tool} action failed: {message}",
    "invalid_result": "The {tool} action failed: {message}",
    "crashed": "The {tool} action failed: {message}",
}
# The reply to a request of a function whose work item may be another replica's now: it
# sees a connection error, and what it answers then is not reported (LeaseLost).
NOT_SENT = {"error": "connect", "message": "the request was not sent"}


class CodeRunner:
    def __init__(
        self,
        pool: Pool,
        egress: Egress,
        secrets: SecretScope,
        variables: ConversationVariables,
    ) -> None:
        self.pool = pool
        self.egress = egress
        self.secrets = secrets
        self.variables = variables

    async def run(self, work: ExecuteRequest) -> ExecutionOutcome:
        started = time.perf_counter()
        try:
            done = await self._run(work)
        except SandboxUnavailable as exc:
            return _outcome(work, {"error": {"kind": "sandbox", "message": str(exc)}})
        except CallRejected as exc:
            return ExecutionOutcome(request=work, failure=error_info(exc), duration_ms=_ms(started))
        ending = done.get("error", {}).get("kind", "result")
        FUNCTION_ENDINGS.labels(work.tool.name, ending).inc()
        if ending == "cancelled":
            return cancelled(work, Stop())
        outcome = _outcome(work, done)
        outcome.duration_ms = _ms(started)
        outcome.attempts = 1
        outcome.attempt_log = [_attempt(outcome, started)]
        return outcome

    async def stopped(self, work: ExecuteRequest) -> None:
        """A function has no ``on_cancel``: stopping its process (its run was cancelled) is
        all there is to do."""

    async def _run(self, work: ExecuteRequest) -> dict[str, Any]:
        spec = work.tool.python
        if spec is None:
            raise TypeError(f"{work.tool.name} is not a python tool")
        secrets = await self.secrets.for_work(work)
        require_all(work, secrets)
        job = {
            "code": spec.code,
            "function": spec.function,
            "arguments": declared_arguments(work.tool, work.call.arguments),
            "ctx": {
                "call_id": work.call.call_id,
                "conversation_id": work.call.conversation_id,
                "agent_id": work.call.agent_id,
                "context": work.call.context,
                "variables": await self.variables.get(work.account_id, work.call.conversation_id),
                "secrets": secrets,
            },
        }
        timeout_s = max(0.0, (work.deadline_at - utcnow()).total_seconds())

        async def egress(request: dict[str, Any], body: bytes) -> Any:
            if not lease_held():  # froze past its ack wait: the call may be another replica's
                return NOT_SENT, b""
            return await self.egress.send(work.deadline_at, request, body)

        ensure_held()  # the function may call its API as soon as it starts
        done = await self.pool.run(work.account_id, job, Call(egress, _logger(work), timeout_s))
        ensure_held()  # its answer may rest on a request refused above: not reported then
        return done


def _logger(work: ExecuteRequest) -> Any:
    span = trace.get_current_span()

    def logged(level: str, message: str) -> None:
        span.add_event("function.log", {"level": level, "message": message})
        log.info("call %s (%s) logged %s: %s", work.call.call_id, work.tool.name, level, message)

    return logged


def _outcome(work: ExecuteRequest, done: dict[str, Any]) -> ExecutionOutcome:
    if "result" in done:
        body = json.dumps(done["result"], ensure_ascii=False, separators=(",", ":"))
        return ExecutionOutcome(
            request=work,
            response=HttpResponse(status=200, content_type="application/json", body=body),
        )
    error = done.get("error") or {}
    kind = str(error.get("kind", "crashed"))
    if kind == "timeout":
        failure = timed_out(work)
    elif kind in TOOL_ERRORS:
        message = TOOL_ERRORS[kind].format(tool=work.tool.name, message=error.get("message", ""))
        failure = CallRejected(ErrorCode.TOOL_ERROR, message, {"kind": kind})
    else:  # the sandbox itself: not the function's doing
        failure = CallRejected(
            ErrorCode.INTERNAL,
            f"The {work.tool.name} action could not run right now. Apologize and offer to "
            "try again later.",
            {"kind": kind, "reason": str(error.get("message", ""))},
        )
    return ExecutionOutcome(request=work, failure=error_info(failure))


def _attempt(outcome: ExecutionOutcome, started: float) -> HttpAttempt:
    """The run as ops see it in ``midcall failed show``: one attempt, with its error code."""
    took_ms = _ms(started)
    return HttpAttempt(
        number=1,
        started_at=utcnow(),
        duration_ms=took_ms,
        http_status=outcome.response.status if outcome.response else None,
        error=outcome.failure.code.value if outcome.failure else None,
    )


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)
