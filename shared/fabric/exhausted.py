"""The backstop for a message that never settles: JetStream stops after ``max_deliver``.

A handler either ends its message or hands it to its service's ``give_up``;
what is left are failures that look transient every time (an outage that
never ends for this one message) and messages that take the whole process
down before anything can be said (a crash loop). For those, the durable's
``max_deliver`` makes JetStream stop redelivering and publish an advisory.
One replica (a queue group) reads it, fetches the message from the stream by
its sequence and hands it to ``give_up`` as if the handler had failed, so its
call ends with an error result or it is set aside as a dead letter. From a
work queue the message is then deleted, as an ack would have removed it.
"""

import json
import logging
from collections.abc import Awaitable, Callable

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import RetentionPolicy
from nats.js.errors import NotFoundError

from shared.fabric.pull_flow import Durable

log = logging.getLogger("midcall.consumer")

# What a service does with a message no retry will fix: end its call with an
# error result, or set it aside as a dead letter.
GiveUp = Callable[[Msg, Exception], Awaitable[None]]

ADVISORY = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.{consumer}"


class DeliveriesExhausted(Exception):
    """What ``give_up`` is told: the message was delivered as often as its durable allows."""


class Exhausted:
    def __init__(self, client: Client, durable: Durable, give_up: GiveUp) -> None:
        self._client = client
        self._durable = durable
        self._give_up = give_up
        self._subscription: Subscription | None = None

    async def start(self) -> None:
        subject = ADVISORY.format(stream=self._durable.stream, consumer=self._durable.name)
        # A queue group: each advisory is handled by one replica.
        self._subscription = await self._client.subscribe(
            subject, queue=self._durable.name, cb=self._on_advisory
        )

    async def stop(self) -> None:
        if self._subscription is not None:
            await self._subscription.unsubscribe()

    async def _on_advisory(self, advisory: Msg) -> None:
        try:
            event = json.loads(advisory.data)
            sequence = int(event["stream_seq"])
        except (ValueError, KeyError, TypeError):
            log.error("unreadable max-deliveries advisory: %r", advisory.data[:200])
            return
        js = self._client.jetstream()
        stream = self._durable.stream
        try:
            stored = await js.get_msg(stream, sequence)
        except NotFoundError:
            return  # acked or aged out since
        message = Msg(
            self._client,
            subject=stored.subject or "",
            data=stored.data or b"",
            headers=stored.headers,
        )
        deliveries = event.get("deliveries")
        failure = DeliveriesExhausted(f"delivered {deliveries} times without an end")
        log.error("%s: giving up on stream sequence %d: %s", self._durable.name, sequence, failure)
        await self._give_up(message, failure)
        info = await js.stream_info(stream)
        if info.config.retention == RetentionPolicy.WORK_QUEUE:
            await js.delete_msg(stream, sequence)
