"""Typed messages: the contract's events and the internal work items.

Readers ignore unknown fields (the contract lets writers add optional ones),
and every field added here must be optional with a default.
"""

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
)

from shared.contract.addressing import Conversation
from shared.contract.errors import ErrorCode
from shared.contract.json_depth import nests_deeper, too_deep
from shared.contract.tools import ReadTools, Tool, declaring

MAX_DEADLINE_MS = 60_000
# This process's tools read from work items and outcomes (ExecuteRequest).
READ_TOOLS = ReadTools()
# Subject tokens may not contain these; ids end up as subject tokens and KV keys.
ID_PATTERN = r"^[A-Za-z0-9_\-=]{1,128}$"
# Free-text ids end up in headers, logs and databases (PostgreSQL holds no NUL).
NO_CONTROL_CHARACTERS = r"^[^\x00-\x1f\x7f]+$"


def utcnow() -> datetime:
    return datetime.now(UTC)


class Event(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ToolCall(Event):
    """runtime -> fabric on ``midcall.calls.<conversation_id>``."""

    call_id: str = Field(min_length=1, max_length=256, pattern=NO_CONTROL_CHARACTERS)
    conversation_id: str = Field(pattern=ID_PATTERN)
    agent_id: str = Field(pattern=ID_PATTERN)
    tool: str = Field(min_length=1, max_length=128, pattern=NO_CONTROL_CHARACTERS)
    arguments: dict[str, Any] = Field(default_factory=dict)
    context: dict[str, Any] = Field(default_factory=dict)
    account_id: str | None = Field(default=None, pattern=ID_PATTERN)
    deadline_ms: int | None = Field(default=None, gt=0)

    @field_validator("deadline_ms")
    @classmethod
    def _cap_deadline(cls, value: int | None) -> int | None:
        # The contract: a deadline never extends past 60 s; longer ones are capped.
        return None if value is None else min(value, MAX_DEADLINE_MS)

    @field_validator("arguments", "context")
    @classmethod
    def _not_too_deep(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        # Held to the limit of REST's documents: binding, jsonschema and json.dumps
        # recurse a level per level.
        if nests_deeper(value):
            raise ValueError(too_deep(f"the {info.field_name} object"))
        return value


class ToolCallPending(Event):
    call_id: str
    conversation_id: str
    tool: str
    status: Literal["pending"] = "pending"
    speak: bool = False
    speech: str | None = None
    muted: bool = False
    at: datetime = Field(default_factory=utcnow)


class ErrorInfo(Event):
    code: ErrorCode
    message: str
    details: Any = None


class ToolCallResult(Event):
    call_id: str
    conversation_id: str
    tool: str
    status: Literal["success", "error"]
    result: Any = None
    agent_message: str | None = None
    speak: bool = True
    variables: dict[str, Any] = Field(default_factory=dict)
    error: ErrorInfo | None = None
    end_conversation: bool = False
    http_status: int | None = None
    attempts: int = 0
    duration_ms: float = 0.0
    at: datetime = Field(default_factory=utcnow)
    # Extension: the W3C trace id, so a runtime can hand ops a link to the trace.
    trace_id: str | None = None
    # Extension: set on the result of a call that ops ran again (``midcall replay``);
    # the original run is attempt 1, the first replay attempt 2.
    replay: bool = False
    replay_attempt: int | None = Field(default=None, ge=2)


class ConversationEnded(Event):
    conversation_id: str
    at: datetime = Field(default_factory=utcnow)


class CallCancel(Event):
    """A runtime cancels one call (the caller interrupted, changed their mind): a call still
    running is aborted and answered ``cancelled``, once; one already answered is left as is."""

    call_id: str = Field(min_length=1, max_length=256, pattern=NO_CONTROL_CHARACTERS)
    reason: str | None = Field(default=None, max_length=500)
    at: datetime = Field(default_factory=utcnow)


class ToolCallProgress(Event):
    """fabric -> runtime on ``midcall.conv.<conversation_id>.progress`` (added with the SDK):
    what a long-running call's API reported through its callback while the call goes on."""

    call_id: str
    conversation_id: str
    message: str = Field(max_length=1000)
    # Whether the runtime should say ``message`` to the caller now.
    speak: bool = False
    percent: float | None = Field(default=None, ge=0, le=100)
    at: datetime = Field(default_factory=utcnow)


class StoredEventsRequest(Event):
    """runtime -> fabric on ``midcall.conv.<conversation_id>.stored`` (request/reply, added
    with the SDK): the events of one call of the conversation, as stored."""

    call_id: str = Field(min_length=1, max_length=256, pattern=NO_CONTROL_CHARACTERS)


class StoredEvent(Event):
    kind: Literal["pending", "progress", "result"]
    event: dict[str, Any]


class StoredEvents(Event):
    """The reply: the call's events in the order they were stored (none yet: empty)."""

    events: list[StoredEvent] = Field(default_factory=list)
    # Set instead when the request could not be read: why.
    error: str | None = None


class UsageRecord(Event):
    call_id: str
    conversation_id: str
    agent_id: str
    account_id: str
    tool: str
    status: Literal["success", "error"]
    input_tokens: int = Field(ge=0)
    output_tokens: int = Field(ge=0)
    units: float = Field(ge=0)
    duration_ms: float = 0.0
    at: datetime = Field(default_factory=utcnow)
    # Extension: a replay is billed as its own attempt, the original stays billed once.
    replay: bool = False
    replay_attempt: int | None = Field(default=None, ge=2)

    @property
    def attempt(self) -> int:
        """Which run of the call this is: 1 for the original."""
        return self.replay_attempt or 1


class ExecuteRequest(Event):
    """Internal work item, dispatcher -> http-executor on ``midcall.exec.<conv>``.

    It carries the tool as it was when the call was accepted, so the executor
    and injector never look anything up and a replay runs the same definition.
    """

    call: ToolCall
    tool: Tool
    account_id: str
    bound: dict[str, Any]
    accepted_at: datetime
    deadline_at: datetime
    # Set when ops replay a failed call: 2 for the first replay (the original is 1).
    replay_attempt: int | None = Field(default=None, ge=2)
    # The account whose own runtimes placed the call (its events go to them only).
    runtime_account: str | None = None

    @field_validator("tool", mode="wrap")
    @classmethod
    def _tool_read_once(
        cls, value: Any, parse: ValidatorFunctionWrapHandler, info: ValidationInfo
    ) -> Tool:
        # Only a tool read from a message, declared before: a declaration is checked whole.
        return parse(value) if declaring(info) else READ_TOOLS.read(value, parse)

    @property
    def attempt(self) -> int:
        return self.replay_attempt or 1

    @property
    def conversation(self) -> Conversation:
        return Conversation(self.account_id, self.call.conversation_id, self.runtime_account)


class HttpResponse(Event):
    status: int
    content_type: str | None = None
    body: str = ""
    truncated: bool = False
    retry_after: str | None = None  # the response's Retry-After header, as sent


class HttpAttempt(Event):
    """One HTTP attempt of a run, for ops (``midcall failed show``)."""

    number: int
    started_at: datetime
    duration_ms: float
    http_status: int | None = None
    # What went wrong before any response came (``timeout``, ``connection_error``).
    error: str | None = None


class ExecutionOutcome(Event):
    """Internal, http-executor -> result-injector on ``midcall.executed.<conv>``.

    Exactly one of ``response`` and ``failure`` is set: the executor reports
    what happened on the wire, the injector decides what it means.
    """

    request: ExecuteRequest
    response: HttpResponse | None = None
    failure: ErrorInfo | None = None
    attempts: int = 0
    duration_ms: float = 0.0
    attempt_log: list[HttpAttempt] = Field(default_factory=list)


class CallRun(Event):
    """Internal, dispatcher or injector -> registry on ``midcall.runs.<conv>``: one run
    of a call that ops may need to see and run again.

    Every run that failed (except the caller's own mistakes) and every replay
    is reported, with what is needed to run it again: the call, the tool as
    used, and the HTTP attempts.
    """

    call: ToolCall
    result: ToolCallResult
    tool: Tool | None = None  # None when the call failed before a tool was found
    account_id: str | None = None
    attempt_log: list[HttpAttempt] = Field(default_factory=list)
    # Where the call's events went, so a replay's result goes there too (ExecuteRequest).
    runtime_account: str | None = None


class ReplayRequest(Event):
    """Internal, registry -> dispatcher on ``midcall.replay.<conv>``: run a failed call again.

    The dispatcher validates and binds it as it would a new call, against the
    tool as it is now, or against ``tool`` (the tool as first called).
    """

    call: ToolCall
    attempt: int = Field(ge=2)
    account_id: str | None = None
    tool: Tool | None = None
    runtime_account: str | None = None
