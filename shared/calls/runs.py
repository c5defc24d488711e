"""Which runs of a call ops keep, in one place for the dispatcher and the injector.

A failed call is kept with what it takes to run it again, unless the caller
itself was wrong: arguments that do not fit, a tool that does not exist, a
loop, a conversation that ended. Running those again changes nothing. Every
replay is kept whatever its end, so ops see what their replay did.
"""

from shared.contract.errors import ErrorCode
from shared.contract.events import ToolCallResult

CALLER_MISTAKES = frozenset(
    {
        ErrorCode.INVALID_ARGUMENTS,
        ErrorCode.UNKNOWN_AGENT,
        ErrorCode.UNKNOWN_TOOL,
        ErrorCode.MISSING_CONTEXT_PARAMETER,
        ErrorCode.REPEATED_CALL,
        ErrorCode.CANCELLED,
    }
)


def worth_keeping(result: ToolCallResult) -> bool:
    if result.replay:
        return True
    return result.error is not None and result.error.code not in CALLER_MISTAKES
