"""From what happened on the wire to what the conversation hears. Pure.

Non-2xx statuses, unreadable bodies and transport failures all become error
results whose message an LLM can relay as it is.
"""

import json
from typing import Any

from shared.errors import CallRejected, ErrorCode
from shared.events import ErrorInfo, ExecutionOutcome, HttpResponse, ToolCallResult
from shared.tools import Tool, compile_jsonpath

MAX_ERROR_BODY_CHARS = 2000


def map_outcome(outcome: ExecutionOutcome, trace_id: str | None = None) -> ToolCallResult:
    call, tool = outcome.request.call, outcome.request.tool
    result = ToolCallResult(
        call_id=call.call_id,
        conversation_id=call.conversation_id,
        tool=call.tool,
        status="success",
        speak=tool.speech.on_receive,
        attempts=outcome.attempts,
        duration_ms=outcome.duration_ms,
        trace_id=trace_id,
    )
    if outcome.response is not None:
        result.http_status = outcome.response.status
    try:
        if outcome.failure is not None:
            raise CallRejected(
                outcome.failure.code, outcome.failure.message, outcome.failure.details
            )
        assert outcome.response is not None
        body = parse_body(tool, outcome.response)
    except CallRejected as failure:
        result.status = "error"
        result.error = ErrorInfo(
            code=failure.code, message=failure.message, details=failure.details
        )
        return result
    result.result = body
    result.agent_message = agent_message(body)
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
        raise CallRejected(
            ErrorCode.INVALID_RESPONSE,
            f"The {tool.name} service gave an answer that could not be read. "
            "Tell the caller there is a technical problem and offer to try "
            "again later.",
            {"content_type": response.content_type, "body": response.body[:MAX_ERROR_BODY_CHARS]},
        ) from exc


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


def agent_message(body: Any) -> str | None:
    message = body.get("agent_message") if isinstance(body, dict) else None
    return message if isinstance(message, str) else None


def extract_variables(tool: Tool, body: Any) -> dict[str, Any]:
    """Each variable's first JSONPath match; variables without a match are left unset."""
    variables: dict[str, Any] = {}
    for name, path in tool.response.variables.items():
        matches = compile_jsonpath(path).find(body)
        if matches:
            variables[name] = matches[0].value
    return variables
