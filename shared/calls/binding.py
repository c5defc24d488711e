"""Validating a call against its tool and binding what the request will be rendered from.

Pure functions: the dispatcher's whole decision about a call, testable without NATS; the
registry's replay preview checks and binds a call the same way.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from shared.contract.errors import CallRejected, ErrorCode
from shared.contract.events import ToolCall, ToolCallPending
from shared.contract.tools import MAX_CALLBACK_TIMEOUT_S, ContextParameter, Tool

MAX_REPORTED_ERRORS = 5


@dataclass(frozen=True)
class Entry:
    """A tool with its arguments' validator, built once per definition."""

    tool: Tool
    validator: Draft202012Validator

    @classmethod
    def of(cls, tool: Tool) -> "Entry":
        return cls(tool, Draft202012Validator(tool.parameters))


def check_arguments(call: ToolCall, validator: Draft202012Validator) -> None:
    # In document order, so the message reads the same for the same mistakes.
    errors = sorted(validator.iter_errors(call.arguments), key=lambda e: (_path(e), e.message))
    if not errors:
        return
    shown = errors[:MAX_REPORTED_ERRORS]
    problems = "; ".join(_describe(error) for error in shown)
    raise CallRejected(
        ErrorCode.INVALID_ARGUMENTS,
        f"The arguments for {call.tool} are not valid: {problems}. "
        "Ask the caller for the missing or corrected details and try again.",
        [{"path": _path(e), "message": e.message, "validator": e.validator} for e in shown],
    )


def _path(error: ValidationError) -> str:
    return ".".join(str(part) for part in error.absolute_path)


def _describe(error: ValidationError) -> str:
    path = _path(error)
    return f"'{path}' {error.message}" if path else error.message


def bind(call: ToolCall, tool: Tool) -> dict[str, Any]:
    """The arguments plus the context parameters, typed; what ``{{input.*}}`` renders from."""
    bound = dict(call.arguments)
    for parameter in tool.context_parameters:
        if parameter.name in call.context:
            bound[parameter.name] = _coerce(parameter, call.context[parameter.name])
        elif parameter.required:
            raise CallRejected(
                ErrorCode.MISSING_CONTEXT_PARAMETER,
                f"The call is missing '{parameter.name}', which {tool.name} needs "
                "from the call context.",
                {"parameter": parameter.name},
            )
    return bound


def declared_arguments(tool: Tool, arguments: dict[str, Any]) -> dict[str, Any]:
    """A python tool's function is called with the arguments its signature declares: the
    schema may let the LLM send more, which the function would refuse as unexpected."""
    declared = tool.parameters.get("properties", {})
    return {name: value for name, value in arguments.items() if name in declared}


def deadline(
    call: ToolCall,
    tool: Tool,
    accepted_at: datetime,
    max_callback_s: float = MAX_CALLBACK_TIMEOUT_S,
) -> datetime:
    """When the call must be answered: its own deadline, else its tool's timeout; later for
    a tool whose API may answer 202 and complete through its callback (``max_callback_s``:
    the deployment's cap on that)."""
    seconds = (call.deadline_ms / 1000) if call.deadline_ms else tool.timeout_s
    waits = tool.request.callback_timeout_s if tool.request is not None else None
    if waits is not None:
        seconds = max(seconds, min(waits, max_callback_s))
    return accepted_at + timedelta(seconds=seconds)


def _coerce(parameter: ContextParameter, value: Any) -> Any:
    typed = _typed(parameter, value)
    if parameter.enum is not None and str(typed) not in parameter.enum:
        raise CallRejected(
            ErrorCode.INVALID_ARGUMENTS,
            f"The call context value of '{parameter.name}' is not one of the allowed values.",
            {"parameter": parameter.name, "allowed": parameter.enum},
        )
    return typed


def _typed(parameter: ContextParameter, value: Any) -> Any:
    try:
        if parameter.type == "integer":
            return int(value)
        if parameter.type == "number":
            return float(value)
        if parameter.type == "boolean":
            return _boolean(value)
    except (TypeError, ValueError) as exc:
        raise CallRejected(
            ErrorCode.INVALID_ARGUMENTS,
            f"The call context value of '{parameter.name}' is not a valid {parameter.type}.",
            {"parameter": parameter.name, "value": value},
        ) from exc
    return value if isinstance(value, str) else str(value)


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "1", "yes"):
        return True
    if str(value).lower() in ("false", "0", "no"):
        return False
    raise ValueError(value)


def pending_for(call: ToolCall, tool: Tool, accepted_at: datetime) -> ToolCallPending:
    """The pending event: the LLM's own filler wins, then the tool's, then none; ``at`` is
    when the call was accepted, so that every copy of a call's pending is the same."""
    speech = tool.speech
    filler = call.arguments.get(speech.from_argument) if speech.from_argument else None
    if isinstance(filler, str) and filler.strip():
        speak, words = True, filler
    elif isinstance(speech.on_send, str):
        speak, words = True, speech.on_send
    else:
        speak, words = bool(speech.on_send), None
    return ToolCallPending(
        call_id=call.call_id,
        conversation_id=call.conversation_id,
        tool=call.tool,
        speak=speak,
        speech=words,
        muted=speech.muted,
        at=accepted_at,
    )
