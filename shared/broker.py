"""The NATS connection every service shares: a FastStream broker, traced."""

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from faststream import AckPolicy, BaseMiddleware
from faststream.exceptions import HandlerException, NackMessage
from faststream.message import StreamMessage
from faststream.nats import JStream, NatsBroker, PullSub
from faststream.nats.opentelemetry import NatsTelemetryMiddleware
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig

from shared import jetstream
from shared.messaging import raw_body

log = logging.getLogger("midcall.consumer")


# An unexpected failure is retried after 0.5 s, 1 s, 2 s ... at most every 30 s.
FIRST_RETRY_S = 0.5
LAST_RETRY_S = 30.0


class BackoffOnFailure(BaseMiddleware):
    """A JetStream message whose handler fails unexpectedly comes back later, not at once.

    Without this, a bug or an outage of something a handler needs would
    redeliver the same message in a tight loop. Deliberate nacks and acks
    (FastStream's handler exceptions) pass through untouched.
    """

    async def consume_scope(self, call_next: Any, msg: StreamMessage[Any]) -> Any:
        try:
            return await call_next(msg)
        except HandlerException:
            raise
        except Exception as exc:
            metadata = getattr(msg.raw_message, "metadata", None)
            if metadata is None:  # core NATS: nothing to redeliver
                raise
            delay = min(LAST_RETRY_S, FIRST_RETRY_S * 2 ** ((metadata.num_delivered or 1) - 1))
            log.exception("handler failed; message comes back in %.1f s", delay)
            raise NackMessage(delay=delay) from exc


def build_broker(
    servers: str, service_name: str, on_reconnect: Callable[[], None] | None = None
) -> NatsBroker:
    """The service's broker; ``on_reconnect`` runs (synchronously) after each reconnect."""
    # FastStream logs a line per message at whatever level it is given; our own
    # logger at WARNING keeps handler errors and drops that per-message noise.
    logger = logging.getLogger(f"midcall.{service_name}.broker")
    logger.setLevel(logging.WARNING)

    async def reconnected() -> None:
        logger.warning("reconnected to NATS")
        if on_reconnect is not None:
            on_reconnect()

    return NatsBroker(
        servers,
        name=f"midcall-{service_name}",
        middlewares=[NatsTelemetryMiddleware(), BackoffOnFailure],
        logger=logger,
        graceful_timeout=30.0,
        # A reconnect must not give up while a clustered server fails over.
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        reconnected_cb=reconnected,
    )


async def connect(broker: NatsBroker) -> tuple[Client, JetStreamContext]:
    """Connect (idempotent), make sure streams and buckets exist, return the raw clients."""
    client: Client = await broker.connect()
    js = client.jetstream()
    await jetstream.ensure(js)
    return client, js


def consume_work(
    broker: NatsBroker,
    handler: Callable[..., Awaitable[None]],
    *,
    subject: str,
    stream: str,
    durable: str,
    concurrency: int,
    title: str,
    description: str,
    ack_wait_s: float | None = None,
) -> Any:
    """A durable pull consumer handling up to ``concurrency`` messages at once.

    Pull consumers share their durable across replicas, so several processes
    split the work. The handler gets raw bytes and parses them itself;
    anything it raises is nacked and redelivered, which every handler makes
    safe (idempotent by call id, de-duplicated publishes).
    """
    return broker.subscriber(
        subject,
        stream=JStream(stream, declare=False),
        durable=durable,
        config=ConsumerConfig(ack_wait=ack_wait_s) if ack_wait_s else None,
        # A pull request dies with its connection and is only replaced when it
        # expires: the expiry bounds how long a consumer is idle after a reconnect.
        pull_sub=PullSub(timeout=1.0),
        max_workers=concurrency,
        decoder=raw_body,
        ack_policy=AckPolicy.NACK_ON_ERROR,
        title=title,
        description=description,
    )(handler)
