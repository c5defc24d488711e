"""The dispatcher's subscriber: ToolCall in, pending (or an error result) and a work item out."""

import asyncio
import logging
from datetime import datetime, timedelta

from nats.aio.msg import Msg

from services.dispatcher.directory import Directory
from services.dispatcher.loops import LoopBreaker
from shared.calls.binding import Entry, bind, check_arguments, deadline, pending_for
from shared.calls.results import failed, internal_failure
from shared.calls.runs import worth_keeping
from shared.contract import subjects
from shared.contract.addressing import Conversation
from shared.contract.catalog import DEFAULT_ACCOUNT
from shared.contract.errors import CallRejected, ErrorCode
from shared.contract.events import (
    CallRun,
    ExecuteRequest,
    ReplayRequest,
    ToolCall,
    ToolCallResult,
)
from shared.contract.tools import DECLARED_BEFORE, MAX_CALLBACK_TIMEOUT_S, Tool
from shared.fabric.call_marks import CallMarks, Mark, run_key
from shared.fabric.consumer import redelivered
from shared.fabric.deadline_timers import DEADLINE_GRACE_S, DeadlineTimers
from shared.fabric.messaging import (
    DeadLetters,
    Publisher,
    Undecodable,
    decode,
    loose_fields,
    msg_id,
    well_formed,
)
from shared.fabric.pull_flow import CALL_MAX_DELIVER, Durable
from shared.observability.metrics import CALLS, PENDING_SECONDS, seconds_since
from shared.observability.tracing import current_trace_id, tracer

log = logging.getLogger("midcall.dispatcher")
# A crash or a failed publish redelivers the call; the claim makes that safe.
DURABLE = Durable(
    subjects.CALLS_STREAM, subjects.ALL_CALLS, "midcall-dispatcher", max_deliver=CALL_MAX_DELIVER
)
# Who claims a call's answer when the dispatcher gives up on it (shared.fabric.call_marks;
# the injector's claimants are the outcome and the deadline).
GAVE_UP = "dispatcher-gave-up"
REPLAYS = Durable(
    subjects.OPS_STREAM,
    subjects.ALL_REPLAYS,
    "midcall-dispatcher-replays",
    max_deliver=CALL_MAX_DELIVER,
)


class Dispatcher:
    def __init__(
        self,
        publisher: Publisher,
        directory: Directory,
        claims: CallMarks,
        timers: DeadlineTimers,
        max_work_bytes: int,
        loops: LoopBreaker | None = None,
        max_callback_s: float = MAX_CALLBACK_TIMEOUT_S,
    ) -> None:
        """``max_callback_s``: the longest a call may wait for its API's completion."""
        self.publisher = publisher
        self.max_callback_s = max_callback_s
        self.timers = timers
        self.loops = loops or LoopBreaker()
        self.directory = directory
        self.claims = claims
        # A work item must fit in one NATS message, and later in an outcome with the response.
        self.max_work_bytes = max_work_bytes
        self.dead_letters = DeadLetters(publisher, "calls")
        self.replays_set_aside = DeadLetters(publisher, "replay")

    async def handle(self, message: Msg) -> None:
        with tracer().start_as_current_span("dispatch") as span:
            runtime_account, conversation_id = subjects.call_origin(message.subject)
            try:
                call = self._decode(message.data, conversation_id)
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
            conversation = self._conversation(call, runtime_account)
            claimant = str(message.metadata.sequence.stream)
            first = await self.claims.claim(conversation.key, call.call_id, claimant)
            if not first and not redelivered(message):
                log.info("duplicate call %s ignored", call.call_id)
            # A redelivery is our own earlier attempt, which died before its ack (or whose
            # ack a stream's new leader never heard): finish it, unless it was answered
            # meanwhile, when a pending now would reach the runtime after its result.
            elif not redelivered(message) or not await self.claims.has(
                conversation.key, call.call_id, Mark.ANSWERED
            ):
                await self._dispatch(call, conversation, message.metadata.timestamp)
            else:
                log.info("call %s was answered before its ack was lost", call.call_id)

    def _conversation(self, call: ToolCall, runtime_account: str | None) -> Conversation:
        """The call's conversation: its agent's account's, or, placed by an account's own
        runtimes, that account's (where another account's agent is unknown)."""
        account_id = runtime_account or self.directory.account_of(call.agent_id)
        return Conversation(account_id, call.conversation_id, runtime_account)

    @staticmethod
    def _decode(body: bytes, conversation_id: str | None) -> ToolCall:
        try:
            call = decode(ToolCall, body)
        except Undecodable as exc:
            raise CallRejected(
                ErrorCode.INVALID_ARGUMENTS, f"The tool call could not be read: {exc}."
            ) from exc
        if call.conversation_id != conversation_id:
            raise CallRejected(
                ErrorCode.INVALID_ARGUMENTS,
                "The tool call's conversation_id does not match its subject.",
            )
        return call

    async def handle_replay(self, message: Msg) -> None:
        """Ops run a failed call again: the same checks as a new call, and no pending."""
        replay = await self.replays_set_aside.read(ReplayRequest, message, DECLARED_BEFORE)
        if replay is None:
            return
        call = replay.call
        with tracer().start_as_current_span("replay") as span:
            span.set_attributes(
                {
                    "midcall.call_id": call.call_id,
                    "midcall.tool": call.tool,
                    "midcall.replay_attempt": replay.attempt,
                }
            )
            await self._dispatch(call, self._replayed(replay), message.metadata.timestamp, replay)

    def _replayed(self, replay: ReplayRequest) -> Conversation:
        # A replay stays with the account that ran (and paid for) the call first.
        call = replay.call
        account_id = replay.account_id or self.directory.account_of(call.agent_id)
        return Conversation(account_id, call.conversation_id, replay.runtime_account)

    async def _dispatch(
        self,
        call: ToolCall,
        conversation: Conversation,
        stored_at: datetime,
        replay: ReplayRequest | None = None,
    ) -> None:
        attempt = replay.attempt if replay else 1
        call = _owned(call, conversation)
        try:
            entry = self._resolve(call, conversation, replay)
        except CallRejected as rejected:
            await self._reject(call, conversation, rejected, attempt=attempt)
            return
        try:
            check_arguments(call, entry.validator)
            bound = bind(call, entry.tool)
            # A replay is an operator's decision, not an LLM in a loop.
            if replay is None and not self.loops.allow(conversation.key, call.tool, call.arguments):
                raise _repeated(call, self.loops)
        except CallRejected as rejected:
            await self._reject(call, conversation, rejected, entry.tool, attempt)
            return
        # When the call was stored, not now: its deadline is the runtime's wait, and a
        # redelivery of the call builds the same pending and work item, byte for byte.
        accepted = stored_at
        deadline_at = deadline(call, entry.tool, accepted, self.max_callback_s)
        work = ExecuteRequest(
            call=call,
            tool=entry.tool,
            bound=bound,
            accepted_at=accepted,
            account_id=conversation.account_id,
            deadline_at=deadline_at,
            replay_attempt=replay.attempt if replay else None,
            runtime_account=conversation.runtime_account,
        ).model_dump_json()
        if len(work) > self.max_work_bytes:  # checked before anything is said to the runtime
            await self._reject(call, conversation, _too_large(call), attempt=attempt)
            return
        if replay is None:  # a replay's runtime heard its pending the first time
            # Stored before the work item is sent: on a cluster whose conversations'
            # stream is electing a leader, the call could otherwise run and its result be
            # stored before its pending (the cluster fault test saw it).
            await self.publisher.pending(pending_for(call, entry.tool, accepted), conversation)
            PENDING_SECONDS.observe(seconds_since(stored_at))
        body = work.encode()
        await asyncio.gather(
            self.publisher.raw(
                body,
                subjects.execute(call.conversation_id, entry.tool.kind),
                subjects.WORK_STREAM,
                {"Nats-Msg-Id": msg_id(conversation.key, call.call_id, "exec", attempt)},
            ),
            # The work item again, for whichever injector is alive at the deadline to
            # answer with a timeout, if no executor got the call that far.
            self.timers.arm(
                call.conversation_id,
                run_key(conversation.key, call.call_id, attempt),
                deadline_at + timedelta(seconds=DEADLINE_GRACE_S),
                body,
            ),
        )

    def _resolve(
        self, call: ToolCall, conversation: Conversation, replay: ReplayRequest | None
    ) -> Entry:
        """The tool to run: as it is now, or as a replay names it."""
        if replay is not None and replay.tool is not None:
            return Entry.of(replay.tool)
        # A call from an account's own runtimes finds that account's agents only.
        within = None if replay else conversation.runtime_account
        return self.directory.resolve(call.agent_id, call.tool, within)

    async def give_up(self, message: Msg, failure: Exception) -> None:
        """A call that failed in a way no retry fixes ends now, with an error result."""
        runtime_account, conversation_id = subjects.call_origin(message.subject)
        try:
            call = self._decode(message.data, conversation_id)
        except CallRejected:
            tool = loose_fields(message.data).get("tool")
            rejected = internal_failure(tool if isinstance(tool, str) else "", failure)
            await self._reject_undecodable(
                message, rejected, f"{type(failure).__name__}: {failure}"
            )
            return
        conversation = self._conversation(call, runtime_account)
        await self._gave_up(_owned(call, conversation), conversation, failure)

    async def give_up_replay(self, message: Msg, failure: Exception) -> None:
        """A replay that broke the dispatcher ends as an error result of that replay."""
        replay = await self.replays_set_aside.read(ReplayRequest, message, DECLARED_BEFORE)
        if replay is not None:
            conversation = self._replayed(replay)
            await self._gave_up(replay.call, conversation, failure, replay.tool, replay.attempt)

    async def _gave_up(
        self,
        call: ToolCall,
        conversation: Conversation,
        failure: Exception,
        tool: Tool | None = None,
        attempt: int = 1,
    ) -> None:
        """End a run given up on with an error result, unless it was answered. An earlier
        delivery may have sent its work item, and the API's answer or the deadline then
        answers it: the answer is claimed first, so one of them is the run's only result."""
        if await self.claims.claim_answer(conversation.key, call.call_id, attempt, GAVE_UP):
            rejected = internal_failure(call.tool, failure)
            await self._reject(call, conversation, rejected, tool, attempt)

    async def _reject_undecodable(
        self, message: Msg, rejected: CallRejected, reason: str | None = None
    ) -> None:
        """Answer a broken call if it can be addressed at all; otherwise set it aside."""
        fields = loose_fields(message.data)
        call_id = fields.get("call_id")
        runtime_account, conversation_id = subjects.call_origin(message.subject)
        if not isinstance(call_id, str) or not call_id or not conversation_id:
            await self.dead_letters.put(message, reason or rejected.message)
            return
        tool = fields.get("tool") if isinstance(fields.get("tool"), str) else ""
        result = ToolCallResult(
            call_id=well_formed(call_id),
            conversation_id=well_formed(conversation_id),
            tool=well_formed(str(tool)),
            status="error",
        )
        # Whose it is cannot be read; its answer goes where its runtime listens.
        conversation = Conversation(
            runtime_account or DEFAULT_ACCOUNT, conversation_id, runtime_account
        )
        await self._answer(result, conversation, rejected)

    async def _reject(
        self,
        call: ToolCall,
        conversation: Conversation,
        rejected: CallRejected,
        tool: Tool | None = None,
        attempt: int = 1,
    ) -> None:
        """The one event a call that cannot be accepted gets: an error result, no pending.
        A failure ops may want to run again is also kept for them."""
        result = ToolCallResult(
            call_id=call.call_id,
            conversation_id=call.conversation_id,
            tool=call.tool,
            status="error",
            replay=attempt > 1,
            replay_attempt=attempt if attempt > 1 else None,
        )
        await self._answer(result, conversation, rejected, tool)
        if worth_keeping(result):
            run = CallRun(
                call=call,
                result=result,
                tool=tool,
                account_id=conversation.account_id,
                runtime_account=conversation.runtime_account,
            )
            await self.publisher.run(run)

    async def _answer(
        self,
        result: ToolCallResult,
        conversation: Conversation,
        rejected: CallRejected,
        tool: Tool | None = None,
    ) -> None:
        result.trace_id = current_trace_id()
        await self.publisher.result(failed(result, rejected, tool), conversation)
        # Only a registered tool's name is a label: callers may send any name at all.
        CALLS.labels(tool.name if tool else "", "error", rejected.code.value).inc()


def _owned(call: ToolCall, conversation: Conversation) -> ToolCall:
    # Whose a call is is the dispatcher's to say, never the runtime's: its conversation's
    # account pays, and only it sees the call's failures, variables and replays.
    return call.model_copy(update={"account_id": conversation.account_id})


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
