"""The NATS connection every service shares: a FastStream broker, traced."""

import logging

from faststream.nats import NatsBroker
from faststream.nats.opentelemetry import NatsTelemetryMiddleware
from nats.aio.client import Client
from nats.js import JetStreamContext

from shared import jetstream


def build_broker(servers: str, service_name: str) -> NatsBroker:
    # FastStream logs a line per message at whatever level it is given; our own
    # logger at WARNING keeps handler errors and drops that per-message noise.
    logger = logging.getLogger(f"midcall.{service_name}.broker")
    logger.setLevel(logging.WARNING)
    return NatsBroker(
        servers,
        name=f"midcall-{service_name}",
        middlewares=[NatsTelemetryMiddleware()],
        logger=logger,
        graceful_timeout=30.0,
        # A reconnect must not give up while a clustered server fails over.
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
    )


async def connect(broker: NatsBroker) -> tuple[Client, JetStreamContext]:
    """Connect (idempotent), make sure streams and buckets exist, return the raw clients."""
    client: Client = await broker.connect()
    js = client.jetstream()
    await jetstream.ensure(js)
    return client, js
