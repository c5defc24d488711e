"""Leader elections as JetStream announces them: work waiting on a stream or bucket with
no leader goes on the moment one is elected, not at its next try.

nats-server elects a stream's new leader 4-9 s after the old one died (raft's timeouts,
not settings), and drops the requests sent to the stream meanwhile unanswered. A waiter
that only tried again would hear of the new leader when its try timed out and the next
was answered: up to ``outages.RETRY_S`` plus a pause later, for every stream on a call's
path in turn. JetStream publishes an advisory for each election in the account; one
subscription per service process hears them all (``follow``), and the try of the one
waiter that probes a silent stream or bucket (``outages.patiently``) is cut short by the
next one (``ELECTIONS.next``); the others go once it is answered. A pull
consumer's own elections are heard by its pull flow (``consumer_elected``).
"""

import asyncio

from nats.aio.client import Client
from nats.aio.msg import Msg


def stream_elected(stream: str) -> str:
    """The subject of JetStream's advisory that ``stream`` has a new leader (nats-server's
    JSAdvisoryStreamLeaderElectedPre)."""
    return f"$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED.{stream}"


def consumer_elected(stream: str, consumer: str) -> str:
    """The subject of the advisory that ``consumer`` of ``stream`` has a new leader
    (JSAdvisoryConsumerLeaderElectedPre)."""
    return f"$JS.EVENT.ADVISORY.CONSUMER.LEADER_ELECTED.{stream}.{consumer}"


# Every stream's and bucket's.
STREAM_ELECTED = stream_elected(">")


class Elections:
    """The elections this process has heard of: ``next()`` resolves at the next one."""

    def __init__(self) -> None:
        self._next: asyncio.Future[None] | None = None

    def next(self) -> "asyncio.Future[None]":
        """Done once a leader is elected anywhere in the account; cancelling it cancels
        only this waiter."""
        loop = asyncio.get_running_loop()
        # Made anew after each election, and per event loop (a test runs several).
        if self._next is None or self._next.done() or self._next.get_loop() is not loop:
            self._next = loop.create_future()
        return asyncio.shield(self._next)

    def heard(self) -> None:
        if self._next is not None and not self._next.done():
            self._next.set_result(None)


ELECTIONS = Elections()


async def follow(client: Client) -> None:
    """Hear every stream's (and bucket's) leader elections on ``client``, for as long as
    it is connected (a reconnect keeps the subscription)."""

    async def heard(_: Msg) -> None:
        ELECTIONS.heard()

    await client.subscribe(STREAM_ELECTED, cb=heard)
