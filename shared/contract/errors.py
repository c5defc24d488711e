"""Error codes of the wire contract and the words an LLM can relay for each."""

from enum import StrEnum


class ErrorCode(StrEnum):
    UNKNOWN_AGENT = "unknown_agent"
    UNKNOWN_TOOL = "unknown_tool"
    INVALID_ARGUMENTS = "invalid_arguments"
    MISSING_CONTEXT_PARAMETER = "missing_context_parameter"
    BLOCKED_DESTINATION = "blocked_destination"
    TIMEOUT = "timeout"
    CONNECTION_ERROR = "connection_error"
    HTTP_ERROR = "http_error"
    INVALID_RESPONSE = "invalid_response"
    TOOL_ERROR = "tool_error"
    CANCELLED = "cancelled"
    INTERNAL = "internal"
    # The same tool with the same arguments too often in one conversation (an LLM loop).
    REPEATED_CALL = "repeated_call"


class CallRejected(Exception):
    """A call that fails permanently with a contract error code.

    Raised by the pure cores (binding, rendering, mapping) and turned into an
    error ToolCallResult by the service that caught it.
    """

    def __init__(self, code: ErrorCode, message: str, details: object = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details
