"""Every error code of the contract as an exception, carrying the message to say.

``await call.result()`` raises the one its result names; each subclass is
one ``ErrorCode``, so a runtime catches what it handles (``except
Timeout``) and says ``exc.message`` for the rest.
"""

from typing import Any

from shared.contract.errors import ErrorCode
from shared.contract.events import ToolCallResult


class CallFailed(Exception):
    """A call's error result; ``message`` is written to be spoken to the caller."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, result: ToolCallResult) -> None:
        assert result.error is not None
        super().__init__(result.error.message)
        self.result = result
        self.message = result.error.message
        self.details: Any = result.error.details


class UnknownAgent(CallFailed):
    code = ErrorCode.UNKNOWN_AGENT


class UnknownTool(CallFailed):
    code = ErrorCode.UNKNOWN_TOOL


class InvalidArguments(CallFailed):
    code = ErrorCode.INVALID_ARGUMENTS


class MissingContextParameter(CallFailed):
    code = ErrorCode.MISSING_CONTEXT_PARAMETER


class BlockedDestination(CallFailed):
    code = ErrorCode.BLOCKED_DESTINATION


class Timeout(CallFailed):
    code = ErrorCode.TIMEOUT


class ConnectionFailed(CallFailed):
    code = ErrorCode.CONNECTION_ERROR


class HttpError(CallFailed):
    code = ErrorCode.HTTP_ERROR


class InvalidResponse(CallFailed):
    code = ErrorCode.INVALID_RESPONSE


class ToolError(CallFailed):
    code = ErrorCode.TOOL_ERROR


class Cancelled(CallFailed):
    code = ErrorCode.CANCELLED


class Internal(CallFailed):
    code = ErrorCode.INTERNAL


class RepeatedCall(CallFailed):
    code = ErrorCode.REPEATED_CALL


BY_CODE: dict[ErrorCode, type[CallFailed]] = {
    error.code: error for error in CallFailed.__subclasses__()
}


def failure(result: ToolCallResult) -> CallFailed:
    """The exception for an error result."""
    assert result.error is not None
    return BY_CODE[result.error.code](result)
