"""From what happened on the wire to what the conversation hears. Pure.

Non-2xx statuses, unreadable bodies and transport failures all become error
results whose message an LLM can relay as it is.
"""

import json
from datetime import datetime
from typing import Any

from shared.calls.results import failed
from shared.contract.errors import CallRejected, ErrorCode
from shared.contract.events import ExecutionOutcome, HttpResponse, ToolCallResult, utcnow
from shared.contract.templates import MISSING
from shared.contract.tools import Tool, ToolErrorRule, compile_jsonpath

MAX_ERROR_BODY_CHARS = 2000


def result_of(
    outcome: ExecutionOutcome, trace_id: str | None = None, at: datetime | None = None
) -> ToolCallResult:
    """The call's result as far as the outcome alone says: addressed, timed, not yet mapped.

    ``at``: when the outcome was stored, so that an outcome handled twice (its ack lost)
    makes the same result, byte for byte; by default, now."""
    work = outcome.request
    call, tool = work.call, work.tool
    return ToolCallResult(
        call_id=call.call_id,
        conversation_id=call.conversation_id,
        tool=call.tool,
        status="success",
        speak=tool.speech.on_receive,
        attempts=outcome.attempts,
        duration_ms=outcome.duration_ms,
        trace_id=trace_id,
        replay=work.replay_attempt is not None,
        replay_attempt=work.replay_attempt,
        at=at or utcnow(),
    )


def map_outcome(
    outcome: ExecutionOutcome, trace_id: str | None = None, at: datetime | None = None
) -> ToolCallResult:
    tool = outcome.request.tool
    result = result_of(outcome, trace_id, at)
    if outcome.response is not None:
        result.http_status = outcome.response.status
    try:
        if outcome.failure is not None:
            raise CallRejected(
                outcome.failure.code, outcome.failure.message, outcome.failure.details
            )
        assert outcome.response is not None
        body = parse_body(tool, outcome.response)
        result.result, result.agent_message = interpret(tool, body)
    except CallRejected as failure:
        return failed(result, failure, tool)
    result.variables = extract_variables(tool, body)
    return result


def parse_body(tool: Tool, response: HttpResponse) -> Any:
    if response.truncated:
        raise CallRejected(
            ErrorCode.INVALID_RESPONSE,
            f"The {tool.name} service sent an answer too large to use. "
            "Tell the caller there is a technical problem.",
        )
    if not 200 <= response.status < 300:
        raise http_error(tool, response)
    if not response.body.strip():
        return None
    try:
        return json.loads(response.body)
    except ValueError as exc:
        raise unreadable(tool, response.content_type, response.body) from exc


def interpret(tool: Tool, body: Any) -> tuple[Any, str | None]:
    """The result and the words to speak, by the tool's response rules."""
    spec = tool.response
    if spec.tool_error is not None:
        check_tool_error(tool, spec.tool_error, body)
    result = body if spec.result_path is None else first_match(spec.result_path, body)
    message = first_match(spec.agent_message_path, body)
    if spec.result_required and (
        result is MISSING
        or (spec.result_type == "object" and not isinstance(result, dict))
        or (message is not MISSING and not isinstance(message, str | None))
    ):
        raise unreadable(tool, "application/json", json.dumps(body)[:MAX_ERROR_BODY_CHARS])
    return (None if result is MISSING else result), (message if isinstance(message, str) else None)


def check_tool_error(tool: Tool, rule: ToolErrorRule, body: Any) -> None:
    """A 2xx body that says the action failed is a ``tool_error`` with the API's own words."""
    if first_match(rule.path, body) != rule.equals:
        return
    said = first_match(rule.message_path, body) if rule.message_path else MISSING
    message = said if isinstance(said, str) and said else f"The {tool.name} action failed."
    raise CallRejected(ErrorCode.TOOL_ERROR, message, {"body": body})


def first_match(path: str, body: Any) -> Any:
    matches = compile_jsonpath(path).find(body)
    return matches[0].value if matches else MISSING


def unreadable(tool: Tool, content_type: str | None, body: str) -> CallRejected:
    return CallRejected(
        ErrorCode.INVALID_RESPONSE,
        f"The {tool.name} service gave an answer that could not be read. "
        "Tell the caller there is a technical problem and offer to try "
        "again later.",
        {"content_type": content_type, "body": body[:MAX_ERROR_BODY_CHARS]},
    )


def http_error(tool: Tool, response: HttpResponse) -> CallRejected:
    status = response.status
    if status in (401, 403):
        advice = (
            "refused our credentials. Tell the caller there is a technical problem on "
            "our side and it cannot be done right now."
        )
    elif 400 <= status < 500:
        advice = (
            "could not accept the request. Ask the caller to check the details they "
            "gave, then try again."
        )
    else:
        advice = "had a problem. Tell the caller to try again in a few minutes."
    return CallRejected(
        ErrorCode.HTTP_ERROR,
        f"The {tool.name} service {advice} (HTTP {status})",
        {"status": status, "body": _readable(response.body)},
    )


def _readable(body: str) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return body[:MAX_ERROR_BODY_CHARS] or None


def extract_variables(tool: Tool, body: Any) -> dict[str, Any]:
    """Each variable's first JSONPath match; variables without a match are left unset."""
    variables: dict[str, Any] = {}
    for name, path in tool.response.variables.items():
        value = first_match(path, body)
        if value is not MISSING:
            variables[name] = value
    return variables
