"""An executor's subscribers: work items in, outcomes out; ends and cancels stop calls.

The same for every kind of tool: the http-executor and the code-executor
differ only in how they run a work item (their ``Runner``). Marks make a
redelivered work item that already ran report nothing twice; an outcome too
large for NATS is reported as such; an end cancels the calls its runtimes
placed, a cancel one of them. Every replica hears every end and cancel
(core NATS): the one running the call stops it; a cancel heard before the
call's work item is remembered for a while, so the call is then answered
``cancelled`` without running.
"""

import asyncio
import logging
import time
from collections import OrderedDict, defaultdict
from dataclasses import dataclass
from typing import Protocol

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import MaxPayloadError

from shared.calls.results import error_info, internal_failure
from shared.contract import subjects
from shared.contract.errors import ErrorCode
from shared.contract.events import (
    CallCancel,
    ConversationEnded,
    ErrorInfo,
    ExecuteRequest,
    ExecutionOutcome,
)
from shared.contract.tools import DECLARED_BEFORE
from shared.fabric.call_marks import CallMarks, Mark
from shared.fabric.consumer import WorkConsumer, redelivered
from shared.fabric.messaging import DeadLetters, Publisher, Undecodable, decode, msg_id
from shared.fabric.pull_flow import CALL_MAX_DELIVER, Durable
from shared.observability.tracing import tracer
from shared.process.memory import MemoryBudget
from shared.settings import Settings

log = logging.getLogger("midcall.executors")
Origin = tuple[str | None, str | None]
# How long a cancel is remembered for a call not seen yet: longer than any call's deadline.
CANCEL_MEMORY_S = 120.0
# In place of a call id, where an end of the whole conversation is remembered (call ids
# are never empty).
ENDED = ""
CANCELS_KEPT = 100_000


@dataclass(frozen=True)
class Stop:
    """Why a running call is stopped: its conversation ended, or it was cancelled."""

    reason: str | None = None
    ended: bool = False


def durable(work: str, name: str) -> Durable:
    """An executor's durable on the work items of ``work`` (a subject filter).

    A call may wait up to its 60 s deadline on the API: its heartbeats keep it
    from being redelivered meanwhile, while an executor that dies gives it up
    in seconds.
    """
    return Durable(subjects.WORK_STREAM, work, name, max_deliver=CALL_MAX_DELIVER)


class Runner(Protocol):
    async def run(self, work: ExecuteRequest) -> ExecutionOutcome: ...

    async def stopped(self, work: ExecuteRequest) -> None:
        """A run was stopped on purpose (a cancel, the conversation's end), not lost with
        the executor: whatever the tool asks done then (an HTTP tool's ``on_cancel``)."""


class ExecutorApp:
    def __init__(
        self, publisher: Publisher, executor: Runner, marks: CallMarks, stage: str = "exec"
    ) -> None:
        """``stage``: the dead letters' stage for work items that cannot be read."""
        self.publisher = publisher
        self.executor = executor
        self.marks = marks
        self.dead_letters = DeadLetters(publisher, stage)
        # By (runtime_account, conversation_id): an end cancels the calls placed by the
        # runtimes that ended it (an account's own, or the shared runtime user's); each
        # task's call id, for a cancel of one call.
        self.inflight: dict[Origin, dict[asyncio.Task[ExecutionOutcome], str]] = defaultdict(dict)
        self.stops: dict[asyncio.Task[ExecutionOutcome], Stop] = {}
        self.telling: set[asyncio.Task[None]] = set()
        # Cancels heard for calls not running here (yet), by (origin, call id); ends of
        # conversations by (origin, ENDED).
        self.cancels: OrderedDict[tuple[Origin, str], tuple[float, Stop]] = OrderedDict()

    async def handle(self, message: Msg) -> None:
        work = await self.dead_letters.read(ExecuteRequest, message, DECLARED_BEFORE)
        if work is None:
            return
        call = work.call
        if redelivered(message) and await self.marks.has(
            work.conversation.key, call.call_id, Mark.EXECUTED, work.attempt
        ):
            log.info("call %s was executed before its ack was lost: not sent again", call.call_id)
            return
        with tracer().start_as_current_span("execute") as span:
            span.set_attributes({"midcall.call_id": call.call_id, "midcall.tool": work.tool.name})
            outcome = await self._run_cancellable(work)
            # The API has answered: the publish and the mark both wait out a NATS blip
            # rather than fail the message, whose redelivery would call the API again.
            await self._record(outcome)

    async def _record(self, outcome: ExecutionOutcome) -> None:
        work = outcome.request
        try:
            await self._publish(outcome)
        except MaxPayloadError:
            # JSON escaping can grow a body past what fits; report it, never loop on it.
            await self._publish(too_large(outcome))
        await self.marks.mark(
            work.conversation.key, work.call.call_id, Mark.EXECUTED, work.attempt, confirmed=False
        )

    async def give_up(self, message: Msg, failure: Exception) -> None:
        """A call that broke the executor in a way no retry fixes is reported as failed."""
        work = await self.dead_letters.read(ExecuteRequest, message, DECLARED_BEFORE)
        if work is None:
            return
        error = error_info(internal_failure(work.tool.name, failure))
        await self._publish(ExecutionOutcome(request=work, failure=error))

    async def _publish(self, outcome: ExecutionOutcome) -> None:
        work = outcome.request
        await self.publisher.event(
            outcome,
            subjects.executed(work.call.conversation_id),
            subjects.WORK_STREAM,
            msg_id(work.conversation.key, work.call.call_id, "executed", work.attempt),
        )

    async def _run_cancellable(self, work: ExecuteRequest) -> ExecutionOutcome:
        conversation = (work.runtime_account, work.call.conversation_id)
        # No await between this look and the task's registration: a cancel handled
        # meanwhile finds one or the other.
        earlier = self.cancels.get((conversation, work.call.call_id)) or self.cancels.get(
            (conversation, ENDED)
        )
        # Old ones are dropped as new ones come: with no cancel since, one may linger.
        if earlier is not None and time.monotonic() - earlier[0] < CANCEL_MEMORY_S:
            return cancelled(work, earlier[1])
        task = asyncio.create_task(self.executor.run(work))
        self.inflight[conversation][task] = work.call.call_id
        try:
            return await task
        except asyncio.CancelledError:
            stop = self.stops.get(task)
            if stop is None or not task.cancelled():
                raise  # we are being stopped ourselves, not the call: it is delivered again
            # Told after the result is published, not before: the cancel waits for no API.
            telling = asyncio.create_task(self.executor.stopped(work))
            self.telling.add(telling)
            telling.add_done_callback(self.telling.discard)
            return cancelled(work, stop)
        finally:
            self.stops.pop(task, None)
            self.inflight[conversation].pop(task, None)
            if not self.inflight[conversation]:
                del self.inflight[conversation]

    async def on_ended(self, message: Msg) -> None:
        try:
            decode(ConversationEnded, message.data)
        except Undecodable:
            return  # billing dead-letters it; nothing of ours to cancel
        # Which conversation is the subject's to say: nats-server put the account there.
        origin = subjects.conversation_origin(message.subject)
        # Remembered too: a call whose pending the runtime heard before it ended the
        # conversation may have its work item still on its way (it is sent after the
        # pending is stored).
        self._remember(origin, ENDED, Stop(ended=True))
        for task in self.inflight.get(origin, {}):
            self._stop(task, Stop(ended=True))

    async def on_cancel(self, message: Msg) -> None:
        try:
            asked = decode(CallCancel, message.data)
        except Undecodable:
            return  # not a cancel: nothing to stop
        origin = subjects.conversation_origin(message.subject)
        stop = Stop(reason=asked.reason)
        self._remember(origin, asked.call_id, stop)
        for task, call_id in list(self.inflight.get(origin, {}).items()):
            if call_id == asked.call_id:
                self._stop(task, stop)

    def _stop(self, task: asyncio.Task[ExecutionOutcome], stop: Stop) -> None:
        self.stops.setdefault(task, stop)
        task.cancel()

    def _remember(self, origin: Origin, call_id: str, stop: Stop) -> None:
        now = time.monotonic()
        self.cancels[(origin, call_id)] = (now, stop)
        self.cancels.move_to_end((origin, call_id))
        while self.cancels:
            heard, _ = next(iter(self.cancels.values()))
            if now - heard < CANCEL_MEMORY_S and len(self.cancels) <= CANCELS_KEPT:
                break
            self.cancels.popitem(last=False)


async def listen(client: Client, app: ExecutorApp) -> None:
    """Core subscriptions on purpose: every executor replica must hear every end and cancel.
    nats-py's own, not FastStream's, whose handler's arguments cost a worker thread's
    round trip per message (0.3 ms of CPU a cancel, in every replica). Nothing is answered:
    the runtime published through JetStream, so the reply subject awaits the stream's ack,
    in the runtime's own inbox, which no service may answer on."""
    for subject in (subjects.ALL_ENDED, subjects.ACCOUNT_ENDED):
        await client.subscribe(subject, cb=app.on_ended)
    for subject in (subjects.ALL_CANCELS, subjects.ACCOUNT_CANCELS):
        await client.subscribe(subject, cb=app.on_cancel)


def cancelled(work: ExecuteRequest, stop: Stop) -> ExecutionOutcome:
    if stop.ended:
        message, details = "The conversation ended before the action finished.", None
    else:
        message = f"The {work.tool.name} action was cancelled before it finished."
        details = {"reason": stop.reason}
    return ExecutionOutcome(
        request=work,
        failure=ErrorInfo(code=ErrorCode.CANCELLED, message=message, details=details),
    )


def too_large(outcome: ExecutionOutcome) -> ExecutionOutcome:
    assert outcome.response is not None
    truncated = outcome.response.model_copy(update={"body": "", "truncated": True})
    return outcome.model_copy(update={"response": truncated})


def work_consumer(
    client: Client, durable: Durable, app: ExecutorApp, settings: Settings, batch: int
) -> WorkConsumer:
    """The executor's pull consumer: as many calls in hand as its memory budget allows."""
    return WorkConsumer(
        client,
        durable,
        app.handle,
        concurrency=settings.executor_concurrency,
        batch=batch,
        memory=MemoryBudget(settings.memory_budget_bytes()),
        give_up=app.give_up,
    )
