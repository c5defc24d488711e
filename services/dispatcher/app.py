"""The dispatcher's subscriber: ToolCall in, pending (or an error result) and a work item out."""

import asyncio
import logging
from datetime import datetime, timedelta

from nats.aio.msg import Msg

from services.dispatcher.binding import bind, check_arguments, pending_for
from services.dispatcher.directory import Directory
from services.dispatcher.loops import LoopBreaker
from shared import subjects
from shared.call_marks import CallMarks
from shared.consumer import redelivered
from shared.errors import CallRejected, ErrorCode
from shared.events import ExecuteRequest, ToolCall, ToolCallResult, utcnow
from shared.messaging import (
    DeadLetters,
    Publisher,
    Undecodable,
    decode,
    loose_fields,
    msg_id,
    well_formed,
)
from shared.metrics import CALLS, PENDING_SECONDS, seconds_since
from shared.pull_flow import Durable
from shared.results import failed, internal_failure
from shared.tools import Tool
from shared.tracing import current_trace_id, tracer

log = logging.getLogger("midcall.dispatcher")
# A crash or a failed publish redelivers the call; the claim makes that safe.
DURABLE = Durable(subjects.CALLS_STREAM, subjects.ALL_CALLS, "midcall-dispatcher")


class Dispatcher:
    def __init__(
        self,
        publisher: Publisher,
        directory: Directory,
        claims: CallMarks,
        max_work_bytes: int,
        loops: LoopBreaker | None = None,
    ) -> None:
        self.publisher = publisher
        self.loops = loops or LoopBreaker()
        self.directory = directory
        self.claims = claims
        # A work item must fit in one NATS message, and later in an outcome with the response.
        self.max_work_bytes = max_work_bytes
        self.dead_letters = DeadLetters(publisher, "calls")

    async def handle(self, message: Msg) -> None:
        with tracer().start_as_current_span("dispatch") as span:
            try:
                call = self._decode(message.data, message.subject)
            except CallRejected as rejected:
                await self._reject_undecodable(message, rejected)
                return
            span.set_attributes(
                {
                    "midcall.call_id": call.call_id,
                    "midcall.tool": call.tool,
                    "midcall.conversation_id": call.conversation_id,
                }
            )
            first = await self.claims.claim(call.conversation_id, call.call_id)
            # A redelivery is our own earlier attempt, which died before its ack: finish it.
            if first or redelivered(message):
                await self._dispatch(call, message.metadata.timestamp)
            else:
                log.info("duplicate call %s ignored", call.call_id)

    @staticmethod
    def _decode(body: bytes, subject: str) -> ToolCall:
        try:
            call = decode(ToolCall, body)
        except Undecodable as exc:
            raise CallRejected(
                ErrorCode.INVALID_ARGUMENTS, f"The tool call could not be read: {exc}."
            ) from exc
        if call.conversation_id != subjects.token_at(subject, 2):
            raise CallRejected(
                ErrorCode.INVALID_ARGUMENTS,
                "The tool call's conversation_id does not match its subject.",
            )
        return call

    async def _dispatch(self, call: ToolCall, stored_at: datetime) -> None:
        try:
            agent, entry = self.directory.resolve(call.agent_id, call.tool)
        except CallRejected as rejected:
            await self._reject(call.call_id, call.conversation_id, call.tool, rejected)
            return
        try:
            check_arguments(call, entry.validator)
            bound = bind(call, entry.tool)
            if not self.loops.allow(call.conversation_id, call.tool, call.arguments):
                raise _repeated(call, self.loops)
        except CallRejected as rejected:
            await self._reject(call.call_id, call.conversation_id, call.tool, rejected, entry.tool)
            return
        accepted = utcnow()
        deadline_s = (call.deadline_ms / 1000) if call.deadline_ms else entry.tool.request.timeout_s
        work = ExecuteRequest(
            call=call,
            tool=entry.tool,
            bound=bound,
            accepted_at=accepted,
            account_id=call.account_id or agent.account_id,
            deadline_at=accepted + timedelta(seconds=deadline_s),
        ).model_dump_json()
        if len(work) > self.max_work_bytes:  # checked before anything is said to the runtime
            await self._reject(call.call_id, call.conversation_id, call.tool, _too_large(call))
            return
        # Both go out at once, pending first on the wire, so it reaches the runtime first.
        await asyncio.gather(
            self.publisher.pending(pending_for(call, entry.tool)),
            self.publisher.raw(
                work.encode(),
                subjects.execute(call.conversation_id),
                subjects.WORK_STREAM,
                {"Nats-Msg-Id": msg_id(call.conversation_id, call.call_id, "exec")},
            ),
        )
        PENDING_SECONDS.observe(seconds_since(stored_at))

    async def give_up(self, message: Msg, failure: Exception) -> None:
        """A call that failed in a way no retry fixes ends now, with an error result."""
        tool = loose_fields(message.data).get("tool")
        rejected = internal_failure(tool if isinstance(tool, str) else "", failure)
        await self._reject_undecodable(message, rejected, f"{type(failure).__name__}: {failure}")

    async def _reject_undecodable(
        self, message: Msg, rejected: CallRejected, reason: str | None = None
    ) -> None:
        """Answer a broken call if it can be addressed at all; otherwise set it aside."""
        fields = loose_fields(message.data)
        call_id = fields.get("call_id")
        conversation_id = subjects.token_at(message.subject, 2)
        if not isinstance(call_id, str) or not call_id or not conversation_id:
            await self.dead_letters.put(message, reason or rejected.message)
            return
        tool = fields.get("tool") if isinstance(fields.get("tool"), str) else ""
        await self._reject(
            well_formed(call_id), well_formed(conversation_id), well_formed(str(tool)), rejected
        )

    async def _reject(
        self,
        call_id: str,
        conversation_id: str,
        tool_name: str,
        rejected: CallRejected,
        tool: Tool | None = None,
    ) -> None:
        """The one event a call that cannot be accepted gets: an error result, no pending."""
        result = ToolCallResult(
            call_id=call_id,
            conversation_id=conversation_id,
            tool=tool_name,
            status="error",
            trace_id=current_trace_id(),
        )
        await self.publisher.result(failed(result, rejected, tool))
        # Only a registered tool's name is a label: callers may send any name at all.
        CALLS.labels(tool.name if tool else "", "error", rejected.code.value).inc()


def _too_large(call: ToolCall) -> CallRejected:
    return CallRejected(
        ErrorCode.INVALID_ARGUMENTS,
        f"The {call.tool} call is too large to run: its arguments take more room than "
        "a message can carry. Ask the caller for less.",
    )


def _repeated(call: ToolCall, loops: LoopBreaker) -> CallRejected:
    return CallRejected(
        ErrorCode.REPEATED_CALL,
        f"{call.tool} was already called {loops.limit} times in the last minute with "
        "exactly these arguments, so it was not called again. Do not repeat it; tell "
        "the caller what you already know, or ask them something new.",
        {"limit": loops.limit, "window_s": loops.window_s},
    )
