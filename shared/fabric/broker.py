"""The NATS connection every service shares: a FastStream broker owns its life cycle.

Every subscriber (``shared.fabric.consumer``, the executors' ends and cancels) and
``shared.fabric.messaging.Publisher`` run on the nats-py client this broker holds:
FastStream's per-message pipeline costs a worker thread's round trip for each
message whose handler takes the message.
"""

import logging
from collections.abc import Callable
from typing import Any

import nats
from faststream.nats import NatsBroker
from faststream.nats.security import NatsCredentials, NatsSecurity, NatsUserPassword
from nats.aio.client import Client
from nats.js import JetStreamContext

from shared.fabric import elections, jetstream
from shared.fabric.liveness import MAX_OUTSTANDING_PINGS, PING_INTERVAL_S
from shared.security.nats_auth import Role, inbox_prefix
from shared.settings import Settings

# nats-py's own inbox prefix, for connections that are not signed in.
DEFAULT_INBOX = "_INBOX"


def build_broker(
    settings: Settings, service_name: str, on_reconnect: Callable[[], None] | None = None
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

    signing_in = sign_in(settings, service_name)
    return NatsBroker(
        settings.nats_servers(),
        security=_security(signing_in),
        inbox_prefix=signing_in.get("inbox_prefix", DEFAULT_INBOX),
        name=f"midcall-{service_name}",
        logger=logger,
        graceful_timeout=30.0,
        # A reconnect must not give up while a clustered server fails over.
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        reconnected_cb=reconnected,
        ping_interval=PING_INTERVAL_S,
        max_outstanding_pings=MAX_OUTSTANDING_PINGS,
    )


def _security(signing_in: dict[str, Any]) -> NatsSecurity | None:
    """The same sign-in, as FastStream takes it."""
    if "user_credentials" in signing_in:
        return NatsCredentials(signing_in["user_credentials"])
    if "user" in signing_in:
        return NatsUserPassword(signing_in["user"], signing_in["password"])
    return None


def sign_in(settings: Settings, role: str) -> dict[str, Any]:
    """nats-py connect options: the settings' user and password or credentials file,
    and the role's own inbox prefix (a signed-in role may read replies under its
    prefix only)."""
    if settings.nats_credentials is not None:
        credentials = str(settings.nats_credentials)
        return {"user_credentials": credentials, "inbox_prefix": _inbox(role)}
    if settings.nats_user is None:
        return {}
    password = settings.nats_password.get_secret_value() if settings.nats_password else ""
    return {"user": settings.nats_user, "password": password, "inbox_prefix": _inbox(role)}


def _inbox(role: str) -> str:
    return inbox_prefix(Role(role)) if role in set(Role) else DEFAULT_INBOX


async def connect(broker: NatsBroker, settings: Settings) -> tuple[Client, JetStreamContext]:
    """Connect (idempotent), return the raw clients; on an open server, first make sure
    streams and buckets exist (signed in, a service may not create them: setup does).
    The process hears leader elections from then on (shared.fabric.elections)."""
    client: Client = await broker.connect()
    js = client.jetstream()
    if not signed_in(settings):
        await jetstream.ensure(js, settings.stream_replicas)
    await elections.follow(client)
    return client, js


def signed_in(settings: Settings) -> bool:
    return settings.nats_user is not None or settings.nats_credentials is not None


async def create_streams(settings: Settings) -> None:
    """``midcall setup``: sign in (as the setup user, where NATS has users) and create
    the streams and buckets the services use but may not create themselves."""
    client = await nats.connect(settings.nats_servers(), **sign_in(settings, Role.SETUP))
    try:
        await jetstream.ensure(client.jetstream(), settings.stream_replicas, move=True)
    finally:
        await client.close()
