"""Building the ToolCallResult of a failed call: one place for every service that fails one."""

from shared.contract.errors import CallRejected, ErrorCode
from shared.contract.events import ErrorInfo, ExecuteRequest, ToolCallResult
from shared.contract.tools import Tool


def failed(result: ToolCallResult, failure: CallRejected, tool: Tool | None) -> ToolCallResult:
    """Mark ``result`` as failed, worded and ended as the tool's platform documents."""
    policy = tool.errors if tool is not None else None
    code = failure.code.value
    result.status = "error"
    result.error = ErrorInfo(
        code=failure.code,
        message=policy.message_for(code, failure.message) if policy else failure.message,
        details=failure.details,
    )
    result.end_conversation = bool(policy and policy.ends_conversation(code))
    return result


def error_info(failure: CallRejected) -> ErrorInfo:
    """A failure as an outcome carries it, before the tool's wording is applied."""
    return ErrorInfo(code=failure.code, message=failure.message, details=failure.details)


def internal_failure(tool_name: str, failure: Exception) -> CallRejected:
    """A call that broke our code in a way no retry fixes: it ends now, in words to say."""
    return CallRejected(
        ErrorCode.INTERNAL,
        f"Something went wrong on our side while running {tool_name or 'that action'}. "
        "Apologize and offer to try again later.",
        {"failure": type(failure).__name__},
    )


def timed_out(work: ExecuteRequest) -> CallRejected:
    """The call's deadline passed: said the same by the executor and by the deadline's timer."""
    budget = (work.deadline_at - work.accepted_at).total_seconds()
    return CallRejected(
        ErrorCode.TIMEOUT,
        f"The {work.tool.name} service did not answer within {budget:g} seconds. "
        "Tell the caller it is taking too long and offer to try again.",
        {"timeout_s": budget},
    )
