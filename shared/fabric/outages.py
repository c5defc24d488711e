"""NATS being away for a while: which failures that is, and riding it out.

A nats-server restart or a cluster fail-over takes seconds; a request sent
just before it may never be answered. Work whose effects are already paid
for (an API answered, an event is ready) is better retried in place, in short
attempts, than failed and redelivered.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import nats.errors
import nats.js.errors

log = logging.getLogger("midcall.outages")
T = TypeVar("T")

# How long work in hand waits out an outage: a clustered fail-over takes about 6 s.
PATIENCE_S = 30.0

# Failures worth trying again: NATS or JetStream being away or slow. Anything
# else (a bug, an input the code cannot take) would fail the same way forever.
TRANSIENT: tuple[type[Exception], ...] = (
    TimeoutError,
    ConnectionError,
    nats.errors.TimeoutError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.NoServersError,
    nats.errors.NoRespondersError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.StaleConnectionError,
    nats.js.errors.ServiceUnavailableError,
    nats.js.errors.NoStreamResponseError,  # JetStream not back yet after a restart
)


async def patiently(attempt: Callable[[], Awaitable[T]], patience_s: float) -> T:
    """Run ``attempt`` until it succeeds, through NATS outages of up to ``patience_s``;
    its result.

    For effects already paid for (an API answered): retrying the publish here
    beats failing the message, whose redelivery would pay for them again. Also
    for a read that a moment's outage should not fail (nats-server answers
    "no responders" for JetStream's API for an instant while it reloads its
    accounts, which runtime credentials make it do).
    """
    give_up = time.monotonic() + patience_s
    delay = 0.1
    while True:
        try:
            return await attempt()
        except TRANSIENT:
            if time.monotonic() + delay > give_up:
                raise
            log.warning("NATS unavailable; trying again in %.1f s", delay)
            await asyncio.sleep(delay)
            delay = min(2 * delay, 2.0)
