"""The injector's handler: outcome in, ToolCallResult and UsageRecord out."""

import asyncio
from datetime import datetime

from nats.aio.msg import Msg

from shared.calls.mapping import map_outcome, result_of
from shared.calls.metering import PriceBook, count_json_tokens
from shared.calls.results import error_info, failed, internal_failure, timed_out
from shared.calls.runs import worth_keeping
from shared.contract import subjects
from shared.contract.events import (
    CallRun,
    ExecuteRequest,
    ExecutionOutcome,
    ToolCallResult,
    UsageRecord,
)
from shared.contract.tools import DECLARED_BEFORE
from shared.fabric.call_marks import CallMarks, Mark, run_key
from shared.fabric.consumer import redelivered
from shared.fabric.conversations import ConversationVariables
from shared.fabric.deadline_timers import CALL_KEY_HEADER, DeadlineTimers
from shared.fabric.messaging import DeadLetters, Publisher
from shared.fabric.pull_flow import CALL_MAX_DELIVER, Durable
from shared.observability.metrics import CALLS, RESULT_SECONDS, seconds_since
from shared.observability.tracing import current_trace_id, tracer

DURABLE = Durable(
    subjects.WORK_STREAM,
    subjects.ALL_EXECUTED,
    "midcall-result-injector",
    max_deliver=CALL_MAX_DELIVER,
)
# Fired deadline timers (shared.fabric.deadline_timers), shared by the injector replicas.
DEADLINES = Durable(
    subjects.TIMERS_STREAM,
    subjects.ALL_DEADLINES,
    "midcall-deadlines",
    max_deliver=CALL_MAX_DELIVER,
)
# Who claimed the answer of a call: its outcome, or its deadline (shared.fabric.call_marks).
DEADLINE = "deadline"


def outcome_claimant(message: Msg) -> str:
    """Who answers with this outcome: the stored outcome message itself, so that its
    redelivery finds its own claim, while a second outcome of the same run (the call
    executed again after nats-server lost its de-duplication state, as a fault test saw)
    finds the first one's and publishes no second, different result."""
    return f"outcome-{message.metadata.sequence.stream}"


class Injector:
    def __init__(
        self,
        publisher: Publisher,
        prices: PriceBook,
        variables: ConversationVariables,
        marks: CallMarks,
        timers: DeadlineTimers,
    ) -> None:
        self.publisher = publisher
        self.timers = timers
        self.marks = marks
        self.prices = prices
        self.variables = variables
        self.dead_letters = DeadLetters(publisher, "executed")
        self.deadline_letters = DeadLetters(publisher, "deadline")

    async def handle(self, message: Msg) -> None:
        outcome = await self.dead_letters.read(ExecutionOutcome, message, DECLARED_BEFORE)
        if outcome is None:
            return
        work, stored_at = outcome.request, message.metadata.timestamp
        call, attempt, conversation = work.call, work.attempt, work.conversation.key
        if redelivered(message) and await self.marks.has(
            conversation, call.call_id, Mark.PUBLISHED, attempt
        ):
            return  # published before the ack was lost: the runtime has its one result
        # Claimed before the result is published, even well before the deadline: a
        # publish held up by a leader election can outlast it, and the deadline's timer
        # must then find the call answered, not answer it a second time (a timeout after
        # a success, as a cluster fault test heard).
        if not await self.marks.claim_answer(
            conversation, call.call_id, attempt, outcome_claimant(message)
        ):
            return  # the deadline answered it first, with a timeout
        await self._answer(outcome, stored_at)
        await self.marks.mark(conversation, call.call_id, Mark.PUBLISHED, attempt, confirmed=False)
        await self.timers.disarm(call.conversation_id, run_key(conversation, call.call_id, attempt))

    async def on_deadline(self, message: Msg) -> None:
        """A call's deadline passed (its timer fired): answer it with a timeout, unless
        it was answered, whatever became of the executor that held it."""
        run = (message.headers or {}).get(CALL_KEY_HEADER)
        if run and await self.marks.run_has(run, Mark.ANSWERED):
            return  # the usual end, answered in time: known without reading the work item
        work = await self.deadline_letters.read(ExecuteRequest, message, DECLARED_BEFORE)
        if work is None:
            return
        key, call_id = work.conversation.key, work.call.call_id
        if not await self.marks.claim_answer(key, call_id, work.attempt, DEADLINE):
            return  # answered meanwhile, or its outcome came just now and answers it
        failure = error_info(timed_out(work))
        # As of the deadline, however late the timer's message is handled: each delivery
        # of it makes the same result.
        elapsed_ms = (work.deadline_at - work.accepted_at).total_seconds() * 1000
        await self._answer(
            ExecutionOutcome(request=work, failure=failure, duration_ms=round(elapsed_ms, 1)),
            work.deadline_at,
        )

    async def _answer(self, outcome: ExecutionOutcome, stored_at: datetime) -> None:
        """Map and publish; ``stored_at`` (when what answers was stored) is the result's
        time, so that a message handled twice makes the same result."""
        with tracer().start_as_current_span("inject") as span:
            span.set_attribute("midcall.call_id", outcome.request.call.call_id)
            result = map_outcome(outcome, current_trace_id(), stored_at)
            if result.variables:
                # Stored before the result goes out: a runtime may render its prompt at once.
                await self.variables.merge(outcome.request.conversation, result.variables)
            await self._publish(result, outcome)

    async def give_up(self, message: Msg, failure: Exception) -> None:
        """An outcome that broke the injector in a way no retry fixes ends as an error result."""
        outcome = await self.dead_letters.read(ExecutionOutcome, message, DECLARED_BEFORE)
        if outcome is None:
            return
        work = outcome.request
        if not await self.marks.claim_answer(
            work.conversation.key, work.call.call_id, work.attempt, outcome_claimant(message)
        ):
            return  # the deadline answered it
        tool = work.tool
        at = message.metadata.timestamp
        result = failed(
            result_of(outcome, current_trace_id(), at), internal_failure(tool.name, failure), tool
        )
        await self._publish(result, outcome)

    async def _publish(self, result: ToolCallResult, outcome: ExecutionOutcome) -> None:
        # Both at once; the result is first on the wire, as the caller is waiting.
        work = outcome.request
        await asyncio.gather(
            self.publisher.result(result, work.conversation),
            self.publisher.usage(self.meter(outcome, result)),
        )
        if worth_keeping(result):
            await self.publisher.run(
                CallRun(
                    call=work.call,
                    result=result,
                    tool=work.tool,
                    account_id=work.account_id,
                    attempt_log=outcome.attempt_log,
                    runtime_account=work.runtime_account,
                )
            )
        code = result.error.code.value if result.error else ""
        CALLS.labels(outcome.request.tool.name, result.status, code).inc()
        RESULT_SECONDS.observe(seconds_since(outcome.request.accepted_at))

    def meter(self, outcome: ExecutionOutcome, result: ToolCallResult) -> UsageRecord:
        work = outcome.request
        input_tokens = count_json_tokens(work.call.arguments)
        output_tokens = count_json_tokens(result.result)
        price = self.prices.for_account(work.account_id)
        return UsageRecord(
            call_id=work.call.call_id,
            conversation_id=work.call.conversation_id,
            agent_id=work.call.agent_id,
            account_id=work.account_id,
            tool=work.call.tool,
            status=result.status,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            units=price.units(input_tokens, output_tokens),
            duration_ms=result.duration_ms,
            replay=result.replay,
            replay_attempt=result.replay_attempt,
        )
