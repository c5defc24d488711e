"""Billing's subscribers: usage records and conversation ends in, each stored once.

Bodies are parsed here rather than by FastStream, so that a message that is
not a valid event can be set aside (acked, and kept on the dead-letter
subject for ops) instead of failing and being redelivered forever.
"""

import asyncio
import logging
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from faststream.exceptions import NackMessage
from faststream.nats import NatsBroker
from faststream.nats.annotations import NatsMessage
from pydantic import BaseModel

from services.billing.store import StoreUnavailable, UsageStore
from shared import subjects
from shared.broker import consume_work
from shared.events import ConversationEnded, UsageRecord
from shared.messaging import DeadLetters, Undecodable, decode
from shared.tracing import tracer

USAGE_DURABLE = "midcall-billing-usage"
ENDED_DURABLE = "midcall-billing-ended"
# How long a message waits before it is tried again after a database failure.
RETRY_DELAY_S = 5.0
# Messages handled at once (each is a short database write in a thread).
CONCURRENCY = 16

log = logging.getLogger("midcall.billing")

Event = TypeVar("Event", bound=BaseModel)
P = ParamSpec("P")


class BillingHandlers:
    """What billing does with each message; the broker wiring is in ``register``."""

    def __init__(self, store: UsageStore, dead_letters: DeadLetters, retry_delay_s: float) -> None:
        self._store = store
        self._dead_letters = dead_letters
        self._retry_delay_s = retry_delay_s

    async def bill(self, body: bytes, message: NatsMessage) -> None:
        """Store one priced call; a redelivered or re-published call is counted once."""
        with tracer().start_as_current_span("bill") as span:
            usage = await self._parse(UsageRecord, body, message)
            if usage is not None:
                span.set_attribute("midcall.call_id", usage.call_id)
                await self._write(self._store.record, usage)

    async def close_conversation(self, body: bytes, message: NatsMessage) -> None:
        """Mark a conversation's summary as ended."""
        with tracer().start_as_current_span("close_conversation") as span:
            ended = await self._parse(ConversationEnded, body, message)
            if ended is not None:
                span.set_attribute("midcall.conversation_id", ended.conversation_id)
                await self._write(self._store.end_conversation, ended.conversation_id, ended.at)

    async def _parse(self, model: type[Event], body: bytes, message: NatsMessage) -> Event | None:
        try:
            return decode(model, body)
        except Undecodable as exc:
            await self._dead_letters.put(message, str(exc))
            return None

    async def _write(self, write: Callable[P, object], *args: P.args, **kwargs: P.kwargs) -> None:
        try:
            await asyncio.to_thread(write, *args, **kwargs)
        except StoreUnavailable as exc:
            # Transient: not acked, so JetStream delivers it again after the delay.
            log.warning("billing: storage failed, retrying in %.1fs: %s", self._retry_delay_s, exc)
            raise NackMessage(delay=self._retry_delay_s) from exc


def register(broker: NatsBroker, store: UsageStore, retry_delay_s: float = RETRY_DELAY_S) -> None:
    """Subscribe billing's handlers on ``broker`` (streams are created by ``shared.broker``).

    Database failures nak with a delay (above); anything else is retried too.
    """
    handlers = BillingHandlers(store, DeadLetters(broker, "billing"), retry_delay_s)
    consume_work(
        broker,
        handlers.bill,
        subject=subjects.ALL_USAGE,
        stream=subjects.USAGE_STREAM,
        durable=USAGE_DURABLE,
        concurrency=CONCURRENCY,
        title="UsageRecord",
        description="Priced calls, stored once each",
    )
    consume_work(
        broker,
        handlers.close_conversation,
        subject=subjects.ALL_ENDED,
        stream=subjects.CONV_STREAM,
        durable=ENDED_DURABLE,
        concurrency=CONCURRENCY,
        title="ConversationEnded",
        description="Closes a conversation's summary",
    )
