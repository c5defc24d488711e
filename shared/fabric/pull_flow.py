"""Pull requests for a durable consumer, kept topped up on one inbox.

Messages are pushed to the inbox as soon as they exist, up to the batch each
request asked for; a new request goes out once half a batch is used, and
never for more than the owner can take. A pull request dies with its
connection or its consumer's leader: ``repull`` (called on reconnect, and when
JetStream announces the consumer's new leader) and the server's idle heartbeats
bring the flow back within a heartbeat or two.
"""

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import ConnectionClosedError
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.errors import BadRequestError

from shared.fabric.elections import consumer_elected

log = logging.getLogger("midcall.consumer")

# The server says it is alive this often while a pull request waits.
HEARTBEAT_S = 1.0
# Heartbeats missed before the requests are taken for dead (their consumer's leader died or
# froze) and sent again: each one waited adds to the wait of a call caught by a failover.
SILENT_BEATS = 2
# A pull request lives this long; a new one replaces it. Shorter than the ack wait: a
# process that freezes stops being sent work (redeliveries of what it held included) once
# its requests expire, so they go to a replica that is awake.
PULL_EXPIRES_S = 3.0
# A refused request (no leader yet, a leader change) is asked again this soon: a new
# consumer leader is heard within this, not within a heartbeat, and it is still no tight
# loop against a server saying no.
REFUSED_RETRY_S = 0.25
STATUS_HEADER = "Status"
PENDING_HEADER = "Nats-Pending-Messages"


@dataclass(frozen=True)
class Durable:
    """A durable pull consumer that several replicas share, splitting its messages."""

    stream: str
    subject: str
    name: str
    # Work in hand is heartbeated, so this expires only for a process that died
    # or froze: then its messages go to another replica within this time.
    ack_wait_s: float = 5.0
    # Deliveries before JetStream gives up on a message (shared.fabric.exhausted); -1: never,
    # for writers that must wait out a storage outage however long.
    max_deliver: int = -1
    # More subjects of the stream it takes, beside ``subject`` (JetStream's filter_subjects).
    also: tuple[str, ...] = ()


# For the call path: with retries backing off to 30 s, 20 deliveries take about
# 7 minutes, long past any call's 60 s deadline, and far beyond a NATS outage
# that handlers ride out in place.
CALL_MAX_DELIVER = 20


class PullFlow:
    """Keeps a durable's pull requests topped up and hands each message over as it arrives.

    ``capacity()`` says how many more messages the owner can take; the flow
    never asks for more than that.
    """

    def __init__(
        self,
        client: Client,
        durable: Durable,
        on_message: Callable[[Msg], None],
        capacity: Callable[[], int],
        batch: int,
    ) -> None:
        self._client = client
        self._durable = durable
        self._on_message = on_message
        self._capacity = capacity
        self._batch = batch
        self._requested = 0  # asked for and not yet delivered or expired
        self._heard_at = time.monotonic()
        self._wake = asyncio.Event()
        self._sub: Subscription | None = None
        self._task: asyncio.Task[None] | None = None
        self._retry: asyncio.TimerHandle | None = None  # a refused request's, one at a time
        self._next = f"$JS.API.CONSUMER.MSG.NEXT.{durable.stream}.{durable.name}"
        self._elections: Subscription | None = None

    async def start(self, max_ack_pending: int) -> None:
        await self._ensure(max_ack_pending)
        inbox = self._client.new_inbox()
        self._sub = await self._client.subscribe(inbox, cb=self._received)
        # A new leader of the consumer starts with no pull requests waiting (the old
        # leader's died with it): ask it at once, not after two silent heartbeats.
        self._elections = await self._client.subscribe(
            consumer_elected(self._durable.stream, self._durable.name), cb=self._elected
        )
        self._wake.set()  # the first pull goes out now, not a heartbeat later
        self._task = asyncio.create_task(self._keep_pulling(inbox))

    async def _ensure(self, max_ack_pending: int) -> None:
        js = self._client.jetstream()
        durable = self._durable
        config = ConsumerConfig(
            durable_name=durable.name,
            # One subject stays a filter_subject, as durables made before ``also`` have it.
            filter_subject=None if durable.also else durable.subject,
            filter_subjects=[durable.subject, *durable.also] if durable.also else None,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self._durable.ack_wait_s,
            max_ack_pending=max_ack_pending,
            max_deliver=self._durable.max_deliver,
        )
        try:
            # Creates the durable, or updates one an older version made where the
            # settings may change in place (max_deliver and ack_wait may).
            await js.add_consumer(self._durable.stream, config)
        except BadRequestError as exc:
            # Settings that cannot change in place: keep using it as it is rather
            # than refuse to start.
            log.warning("consumer %s kept as it was: %s", self._durable.name, exc.description)

    def wake(self) -> None:
        self._wake.set()

    def repull(self) -> None:
        """Forget pull requests that may have died (a reconnect, a new consumer leader) and
        ask again."""
        self._requested = 0
        self._wake.set()

    async def _elected(self, _: Msg) -> None:
        self.repull()

    async def stop(self) -> None:
        """Ask for nothing more, and hand over what already arrived (drained, not dropped)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._elections is not None:
            with contextlib.suppress(ConnectionClosedError):
                await self._elections.unsubscribe()
        if self._sub is not None:
            # Nothing to hand over once the connection is gone: the ack wait returns them.
            with contextlib.suppress(ConnectionClosedError):
                await self._sub.drain()  # type: ignore[no-untyped-call]

    async def _received(self, msg: Msg) -> None:
        self._heard_at = time.monotonic()
        status = msg.headers.get(STATUS_HEADER) if msg.headers else None
        if status is None:
            self._requested = max(0, self._requested - 1)
            self._on_message(msg)
        elif status != "100":  # not a heartbeat: a request ended (expired, or refused)
            left = msg.headers.get(PENDING_HEADER) if msg.headers else None
            self._requested = max(0, self._requested - int(left)) if left else 0
            if status != "408":
                # Refused (a leader change, too many waiting requests...): ask again soon.
                log.warning("pull on %s refused: %s", self._durable.name, msg.headers)
                self._wake_soon()
                return
        self._wake.set()

    def _wake_soon(self) -> None:
        """Wake the flow in ``REFUSED_RETRY_S``: one wake-up waits at a time, however many
        requests were refused (a leader change refuses every one outstanding)."""
        loop = asyncio.get_running_loop()
        if self._retry is None or self._retry.when() <= loop.time():
            self._retry = loop.call_later(REFUSED_RETRY_S, self._wake.set)

    async def _keep_pulling(self, inbox: str) -> None:
        while True:
            # Not asyncio.wait_for: on Python 3.11 it can swallow a cancellation.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(HEARTBEAT_S):
                    await self._wake.wait()
            if self._requested and time.monotonic() - self._heard_at > SILENT_BEATS * HEARTBEAT_S:
                self._requested = 0  # the server forgot our requests (it restarted)
            self._wake.clear()
            await self._top_up(inbox)

    async def _top_up(self, inbox: str) -> None:
        free = self._capacity() - self._requested
        # Ask again once half a batch is used up, so a request is always waiting.
        if free <= 0 or self._requested > self._batch // 2 or self._client.is_reconnecting:
            return
        wanted = min(self._batch, free)
        request = {
            "batch": wanted,
            "expires": int(PULL_EXPIRES_S * 1e9),
            "idle_heartbeat": int(HEARTBEAT_S * 1e9),
        }
        self._requested += wanted
        self._heard_at = time.monotonic()
        try:
            await self._client.publish(self._next, json.dumps(request).encode(), reply=inbox)
        except Exception:  # closed or reconnecting: the next wake tries again
            self._requested -= wanted
            log.debug("pull request not sent", exc_info=True)
