"""The NATS connection every service shares: a FastStream broker owns its life cycle.

The hot path (``shared.consumer``, ``shared.messaging.Publisher``) runs on the
nats-py client this broker holds; FastStream's per-message pipeline is kept
for the few subscribers off that path.
"""

import logging
from collections.abc import Callable

from faststream.nats import NatsBroker
from nats.aio.client import Client
from nats.js import JetStreamContext

from shared import jetstream


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
