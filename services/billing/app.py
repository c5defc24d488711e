"""Billing's handlers: usage records and conversation ends in, each stored once.

Usage records are written a batch at a time (what arrived while the last
batch was written), one transaction per batch. Bodies are parsed here, so a
message that is not a valid event is set aside (acked, and kept on the
dead-letter subject for ops) instead of failing and being redelivered forever.
"""

import asyncio
import logging
from collections.abc import Callable
from typing import ParamSpec

from nats.aio.client import Client
from nats.aio.msg import Msg
from opentelemetry import propagate

from services.billing.store import RecordsRefused, StoreUnavailable, UsageStore
from shared.contract import subjects
from shared.contract.events import ConversationEnded, UsageRecord
from shared.fabric.consumer import BatchConsumer, Retry, WorkConsumer
from shared.fabric.messaging import DeadLetters, Publisher
from shared.fabric.pull_flow import Durable
from shared.observability.tracing import tracer

USAGE = Durable(subjects.USAGE_STREAM, subjects.ALL_USAGE, "midcall-billing-usage")
# MIDCALL_ENDED holds ends and cancels, the shared runtime user's and every account's own:
# billing takes the ends only.
ENDED = Durable(
    subjects.ENDED_STREAM,
    subjects.ALL_ENDED,
    "midcall-billing-ended",
    also=(subjects.ACCOUNT_ENDED,),
)
# How long a message waits before it is tried again after a database failure.
RETRY_DELAY_S = 5.0
# Usage records written in one transaction, at most.
BATCH = 256
# Conversation ends handled at once (each a short database write in a thread).
CONCURRENCY = 16

log = logging.getLogger("midcall.billing")

P = ParamSpec("P")


class BillingHandlers:
    """What billing does with each message; the consumers are built by ``consumers``."""

    def __init__(self, store: UsageStore, dead_letters: DeadLetters, retry_delay_s: float) -> None:
        self._store = store
        self._dead_letters = dead_letters
        self._retry_delay_s = retry_delay_s

    async def bill(self, batch: list[Msg]) -> None:
        """Store priced calls; a redelivered or re-published call is counted once."""
        parsed = [
            (message, await self._dead_letters.read(UsageRecord, message)) for message in batch
        ]
        valid = [(message, record) for message, record in parsed if record is not None]
        try:
            if valid:
                await self._write(self._store.record_many, [record for _, record in valid])
        except RecordsRefused:
            # One record the database cannot hold must not hold up the others.
            await self._one_by_one(valid)
        for message, record in valid:
            self._trace_bill(message, record)

    async def _one_by_one(self, valid: list[tuple[Msg, UsageRecord]]) -> None:
        for message, record in valid:
            try:
                await self._write(self._store.record_many, [record])
            except RecordsRefused as refused:
                await self._dead_letters.put(message, str(refused))

    async def close_conversation(self, message: Msg) -> None:
        """Mark a conversation's summary as ended: the account's whose runtime ended it, or
        for the shared runtime user that conversation id's in every account."""
        if message.subject.rpartition(".")[2] == "cancel":
            # A call's cancel: the durable takes ends only, but one made before it did, and
            # that the server would not update, takes the whole stream.
            return
        with tracer().start_as_current_span("close_conversation") as span:
            ended = await self._dead_letters.read(ConversationEnded, message)
            if ended is None:
                return
            # Whose conversation, and which, is the subject's to say: nats-server put the
            # account there, and executors cancel that conversation's calls. The body is
            # the runtime's word: whatever it names is not used.
            account_id, conversation_id = subjects.conversation_origin(message.subject)
            if conversation_id is None:
                await self._dead_letters.put(message, "not a conversation's end subject")
                return
            span.set_attribute("midcall.conversation_id", conversation_id)
            await self._write(self._store.end_conversation, account_id, conversation_id, ended.at)

    @staticmethod
    def _trace_bill(message: Msg, record: UsageRecord) -> None:
        # One span per call in its own trace, though the batch shared one write.
        parent = propagate.extract(message.headers) if message.headers else None
        with tracer().start_as_current_span("bill", context=parent) as span:
            span.set_attribute("midcall.call_id", record.call_id)

    async def _write(self, write: Callable[P, object], *args: P.args, **kwargs: P.kwargs) -> None:
        try:
            await asyncio.to_thread(write, *args, **kwargs)
        except StoreUnavailable as exc:
            # Transient: not acked, so JetStream delivers it again after the delay.
            raise Retry(self._retry_delay_s, f"billing storage failed: {exc}") from exc


def consumers(
    client: Client, store: UsageStore, retry_delay_s: float = RETRY_DELAY_S
) -> tuple[BatchConsumer, WorkConsumer]:
    """Billing's two consumers on ``client`` (streams are created by ``shared.fabric.broker``)."""
    dead_letters = DeadLetters(Publisher(client.jetstream()), "billing")
    handlers = BillingHandlers(store, dead_letters, retry_delay_s)
    return (
        BatchConsumer(client, USAGE, handlers.bill, BATCH),
        WorkConsumer(
            client,
            ENDED,
            handlers.close_conversation,
            concurrency=CONCURRENCY,
            give_up=dead_letters.set_aside,
        ),
    )
