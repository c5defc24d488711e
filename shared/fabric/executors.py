"""An executor's subscribers: work items in, outcomes out; conversation ends cancel.

The same for every kind of tool: the http-executor and the code-executor
differ only in how they run a work item (their ``Runner``). Marks make a
redelivered work item that already ran report nothing twice; an outcome too
large for NATS is reported as such; an end cancels the calls its runtimes
placed.
"""

import asyncio
import logging
from collections import defaultdict
from typing import Protocol

from faststream.nats import NatsBroker, NatsMessage
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import MaxPayloadError

from shared.calls.results import error_info, internal_failure
from shared.contract import subjects
from shared.contract.errors import ErrorCode
from shared.contract.events import ConversationEnded, ErrorInfo, ExecuteRequest, ExecutionOutcome
from shared.contract.tools import DECLARED_BEFORE
from shared.fabric.call_marks import CallMarks, Mark
from shared.fabric.consumer import WorkConsumer, redelivered
from shared.fabric.messaging import DeadLetters, Publisher, Undecodable, decode, msg_id, raw_body
from shared.fabric.pull_flow import CALL_MAX_DELIVER, Durable
from shared.observability.tracing import tracer
from shared.process.memory import MemoryBudget
from shared.settings import Settings

log = logging.getLogger("midcall.executors")
Origin = tuple[str | None, str | None]


def durable(work: str, name: str) -> Durable:
    """An executor's durable on the work items of ``work`` (a subject filter).

    A call may wait up to its 60 s deadline on the API: its heartbeats keep it
    from being redelivered meanwhile, while an executor that dies gives it up
    in seconds.
    """
    return Durable(subjects.WORK_STREAM, work, name, max_deliver=CALL_MAX_DELIVER)


class Runner(Protocol):
    async def run(self, work: ExecuteRequest) -> ExecutionOutcome: ...


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
        # runtimes that ended it (an account's own, or the shared runtime user's).
        self.inflight: dict[Origin, set[asyncio.Task[ExecutionOutcome]]] = defaultdict(set)

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
        await self.marks.mark(work.conversation.key, work.call.call_id, Mark.EXECUTED, work.attempt)

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
        task = asyncio.create_task(self.executor.run(work))
        self.inflight[conversation].add(task)
        try:
            return await task
        except asyncio.CancelledError:
            if not task.cancelled():
                raise  # we are being stopped ourselves, not the call
            return cancelled(work)
        finally:
            self.inflight[conversation].discard(task)
            if not self.inflight[conversation]:
                del self.inflight[conversation]

    async def on_ended(self, message: NatsMessage) -> None:
        try:
            decode(ConversationEnded, message.body)
        except Undecodable:
            return  # billing dead-letters it; nothing of ours to cancel
        # Which conversation is the subject's to say: nats-server put the account there.
        for task in self.inflight.get(subjects.ended_origin(message.raw_message.subject), set()):
            task.cancel()


def register(broker: NatsBroker, app: ExecutorApp) -> None:
    # A core subscription on purpose: every executor replica must hear every end.
    for ends in (subjects.ALL_ENDED, subjects.ACCOUNT_ENDED):
        broker.subscriber(
            ends,
            decoder=raw_body,
            title=f"ConversationEnded:{ends}",
            # The runtime published it through JetStream: its reply subject awaits the
            # stream's ack, and is the runtime's own inbox, which no service may answer on.
            no_reply=True,
            description="Cancels the conversation's in-flight calls",
        )(app.on_ended)


def cancelled(work: ExecuteRequest) -> ExecutionOutcome:
    return ExecutionOutcome(
        request=work,
        failure=ErrorInfo(
            code=ErrorCode.CANCELLED, message="The conversation ended before the action finished."
        ),
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
