"""Consuming a JetStream durable as a continuous flow of work, on the service's own connection.

FastStream's per-message pipeline (middlewares, dependency resolution, a
pull per message) cost most of every service's CPU, so the hot path uses
nats-py directly, the way nats.go's ``Consume`` does:

- messages arrive through a ``PullFlow`` (``shared.fabric.pull_flow``), as soon as
  they exist and many per pull request;
- each message runs as its own task, up to the consumer's concurrency and
  while the process stays under its memory budget, and is heartbeated while
  in hand, so a short ack wait expires only for a process that died;
- a message is its task's while its lease holds (renewed by those heartbeats):
  code about to send what must not go twice calls ``ensure_held()``, which
  raises ``LeaseLost`` in a process that froze past its ack wait, and the
  message is then left unsettled, as it may be another replica's now;
- acks are plain publishes (no round trip each); a failure that may pass is
  nacked with a delay growing with its deliveries, one that never will is
  handed to the service's ``give_up``;
- the runtime's W3C trace context travels in the headers: the handler's spans
  continue it, with no span per framework step.
"""

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass, field

from nats.aio.client import Client
from nats.aio.msg import Msg
from opentelemetry import context, propagate

from shared.fabric.exhausted import Exhausted, GiveUp
from shared.fabric.outages import transient
from shared.fabric.pull_flow import Durable, PullFlow
from shared.observability.metrics import IN_FLIGHT, LEASES_LOST, REDELIVERIES
from shared.process.memory import MemoryBudget

log = logging.getLogger("midcall.consumer")

Handler = Callable[[Msg], Awaitable[None]]
BatchHandler = Callable[[list[Msg]], Awaitable[None]]

# An unexpected failure is retried after 0.5 s, 1 s, 2 s ... at most every 30 s.
FIRST_RETRY_S = 0.5
LAST_RETRY_S = 30.0
# A message in hand is ours while less than this share of its ack wait has passed since its
# lease was last renewed (on arrival, then as each in_progress goes out). The heartbeat renews
# it at most two intervals (2/3 of the ack wait) apart: the rest covers a late beat and the
# message's trip to us, during which JetStream's ack wait already runs. time.monotonic keeps
# running while the process is stopped (SIGSTOP, a long GC pause, a starved VM), so a process
# that wakes from a freeze past its ack wait finds its leases lapsed.
LEASE_SHARE = 0.8
# The event loop's own pulse. A message read just after the loop stood still (a freeze, a
# long pause) may have waited in the socket through the stall, delivered long before it was
# read, its ack wait running all along: its lease starts when the loop stopped.
PULSE_S = 0.1
STALL_S = 0.5  # a pulse this late means the loop stood still
DRAIN_S = 0.1  # messages read this soon after a stall may have waited through it


class Retry(Exception):
    """Raised by a handler when the message may succeed later (an outage): nack with a delay."""

    def __init__(self, delay_s: float, reason: str) -> None:
        super().__init__(reason)
        self.delay_s = delay_s


class LeaseLost(Exception):
    """The message this task works on may be another replica's now: the process froze past
    its ack wait. Nothing more is sent for it, and it is neither acked nor nacked: if no
    other replica took it, JetStream delivers it again after its ack wait."""


@dataclass
class Lease:
    """How long a message in hand stays ours: renewed by each heartbeat, lapsed for good
    once ``lease_s`` pass without one."""

    msg: Msg
    lease_s: float
    renewed_at: float = field(default_factory=time.monotonic)

    def held(self, now: float) -> bool:
        return now - self.renewed_at < self.lease_s


# Set in each message's task (it has its own context): tasks it starts inherit it.
_LEASE: ContextVar[Lease | None] = ContextVar("midcall_lease", default=None)


def lease_held() -> bool:
    """Whether the message this task works on is still ours; outside a consumer's task
    (a replay, a test) there is no lease to lose."""
    lease = _LEASE.get()
    return lease is None or lease.held(time.monotonic())


def ensure_held() -> None:
    """Raise ``LeaseLost`` unless the message this task works on is still ours: called right
    before an effect another replica may make too (a request to the customer's API)."""
    lease = _LEASE.get()
    if lease is not None and not lease.held(now := time.monotonic()):
        lapsed_s = now - lease.renewed_at
        raise LeaseLost(f"not renewed for {lapsed_s:.1f} s (its lease: {lease.lease_s:.1f} s)")


def redelivered(msg: Msg) -> bool:
    """Whether JetStream has delivered this message before (to us or to a replica that died)."""
    return (msg.metadata.num_delivered or 1) > 1


def backoff_s(deliveries: int) -> float:
    return float(min(LAST_RETRY_S, FIRST_RETRY_S * 2 ** (max(deliveries, 1) - 1)))


async def settle(msgs: list[Msg], work: Awaitable[None], give_up: GiveUp | None = None) -> None:
    """Run ``work`` for ``msgs``; ack them when it succeeds, nack with a delay when it may
    succeed later, and hand a message to ``give_up`` when it never will."""
    try:
        await work
    except LeaseLost as lost:
        # Not ours to settle: another replica may be working on it now.
        log.warning("%s left to JetStream: %s", msgs[0].subject, lost)
    except Retry as retry:
        log.warning("%s comes back in %.1f s: %s", msgs[0].subject, retry.delay_s, retry)
        await _answer(msg.nak(delay=retry.delay_s) for msg in msgs)
    except Exception as failure:
        if give_up is None or transient(failure) or not await _gave_up(give_up, msgs, failure):
            log.exception("handler failed on %s (%d messages)", msgs[0].subject, len(msgs))
            await _answer(msg.nak(delay=backoff_s(msg.metadata.num_delivered or 1)) for msg in msgs)
        else:
            await _answer(msg.ack() for msg in msgs)
    else:
        await _answer(msg.ack() for msg in msgs)


async def _gave_up(give_up: GiveUp, msgs: list[Msg], failure: Exception) -> bool:
    log.error("giving up on %s: %r", msgs[0].subject, failure, exc_info=failure)
    try:
        for msg in msgs:
            await give_up(msg, failure)
    except Exception:
        log.exception("could not give up on %s; it comes back later", msgs[0].subject)
        return False
    return True


async def _answer(replies: Iterable[Awaitable[None]]) -> None:
    """Send acks or nacks; one that cannot be sent (connection lost) is left to the ack wait."""
    for outcome in await asyncio.gather(*replies, return_exceptions=True):
        if isinstance(outcome, Exception):
            log.warning("ack not sent, the message comes back after its ack wait: %r", outcome)


class Heartbeat:
    """Tells JetStream, for each message in hand, that it is still being worked on, and
    renews the message's ``Lease`` as it does.

    Ack waits can then be short (a dead process's work moves on in seconds)
    while a call may wait on its API for up to a minute.
    """

    def __init__(self, ack_wait_s: float) -> None:
        self._interval_s = ack_wait_s / 3
        self._lease_s = LEASE_SHARE * ack_wait_s
        self._in_hand: dict[int, Lease] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._pulsed_at = time.monotonic()
        self._stall = (0.0, -math.inf)  # the last stall: when the loop stopped, when it woke

    def start(self) -> None:
        self._pulsed_at = time.monotonic()
        self._tasks = [asyncio.create_task(self._beat()), asyncio.create_task(self._pulse())]

    def hold(self, msg: Msg) -> Lease:
        lease = self._in_hand[id(msg)] = Lease(msg, self._lease_s, self._delivered_by(msg))
        return lease

    def _delivered_by(self, msg: Msg) -> float:
        """When ``msg``, read now, was delivered at the latest: now, or, just after a
        stall, when the loop stopped or when the message was stored, whichever is later
        (JetStream delivers a message after storing it)."""
        now = time.monotonic()
        stopped, woke = self._stall
        if now - self._pulsed_at > PULSE_S + STALL_S:
            stopped = self._pulsed_at  # the loop stood still until now; the pulse has not run
        elif now - woke >= DRAIN_S:
            return now
        age = max(0.0, time.time() - msg.metadata.timestamp.timestamp())
        return max(stopped, now - age)

    async def _pulse(self) -> None:
        while True:
            await asyncio.sleep(PULSE_S)
            now = time.monotonic()
            if now - self._pulsed_at > PULSE_S + STALL_S:
                self._stall = (self._pulsed_at, now)
            self._pulsed_at = now

    def release(self, msg: Msg) -> None:
        self._in_hand.pop(id(msg), None)

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            now = time.monotonic()
            due = [
                lease
                for lease in self._in_hand.values()
                if lease.renewed_at <= now - self._interval_s
            ]
            for lease in due:
                # A lapsed lease stays lapsed: after a freeze this beat may run before the
                # handler, which must still find its message lost. Its in_progress still goes:
                # if JetStream has not given the message away, a handler past its last send
                # keeps it, as before.
                if lease.held(now):
                    lease.renewed_at = now
            await _answer(lease.msg.in_progress() for lease in due)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class WorkConsumer:
    """Runs ``handler`` for each message of a durable, many at once, acking as each settles."""

    def __init__(
        self,
        client: Client,
        durable: Durable,
        handler: Handler,
        *,
        concurrency: int,
        batch: int = 64,
        memory: MemoryBudget | None = None,
        give_up: GiveUp | None = None,
    ) -> None:
        self._handler = handler
        self._give_up = give_up
        self._name = durable.name
        self._in_flight = IN_FLIGHT.labels(durable.name)
        self._concurrency = concurrency
        self._memory = memory
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._flow = PullFlow(client, durable, self._start_one, self._capacity, batch)
        self._heartbeat = Heartbeat(durable.ack_wait_s)
        limited = durable.max_deliver > 0
        self._exhausted = Exhausted(client, durable, give_up) if limited and give_up else None

    async def start(self) -> None:
        if self._exhausted is not None:
            await self._exhausted.start()
        await self._flow.start(max_ack_pending=self._concurrency)
        self._heartbeat.start()

    def repull(self) -> None:
        self._flow.repull()

    def _capacity(self) -> int:
        if self._stopping or (self._memory is not None and self._memory.exceeded()):
            return 0
        return self._concurrency - len(self._tasks)

    def _start_one(self, msg: Msg) -> None:
        if self._stopping:
            # Let another replica have it now rather than after the ack wait.
            task = asyncio.create_task(_answer([msg.nak()]))
        else:
            # Held from arrival, not from when its task first runs: a burst may queue
            # thousands behind a busy loop, and none may outlive its ack wait there.
            lease = self._heartbeat.hold(msg)
            if redelivered(msg):
                REDELIVERIES.labels(self._name).inc()
            task = asyncio.create_task(settle([msg], self._traced(msg, lease), self._give_up))
        self._tasks.add(task)
        self._in_flight.inc()
        task.add_done_callback(self._finished)

    async def _traced(self, msg: Msg, lease: Lease) -> None:
        # Each task has its own context: the handler's spans continue the caller's trace,
        # and ensure_held finds this message's lease.
        _LEASE.set(lease)
        if msg.headers:
            context.attach(propagate.extract(msg.headers))
        try:
            await self._handler(msg)
        except LeaseLost:
            LEASES_LOST.labels(self._name).inc()
            raise
        finally:
            self._heartbeat.release(msg)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._in_flight.dec()
        self._flow.wake()

    async def stop(self, grace_s: float = 30.0) -> None:
        """Take nothing new; let the messages in hand finish (within ``grace_s``).

        Messages that arrive while stopping are nacked at once, so another
        replica takes them now rather than after the ack wait.
        """
        self._stopping = True
        await self._flow.stop()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace_s)
        for task in set(self._tasks):
            task.cancel()  # not acked: JetStream delivers it again
        await self._heartbeat.stop()
        if self._exhausted is not None:
            await self._exhausted.stop()


class BatchConsumer:
    """Runs ``handler`` on everything that has arrived, one batch at a time.

    For writers whose cost is per transaction, not per message (billing):
    what arrives while a batch is being written forms the next one.
    """

    def __init__(self, client: Client, durable: Durable, handler: BatchHandler, batch: int) -> None:
        self._handler = handler
        self._batch = batch
        self._waiting: list[Msg] = []
        self._in_hand = 0
        self._arrived = asyncio.Event()
        self._writing = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._flow = PullFlow(client, durable, self._queue, self._capacity, batch)
        self._heartbeat = Heartbeat(durable.ack_wait_s)

    async def start(self) -> None:
        await self._flow.start(max_ack_pending=2 * self._batch)
        self._task = asyncio.create_task(self._write_batches())
        self._heartbeat.start()

    def repull(self) -> None:
        self._flow.repull()

    def _capacity(self) -> int:
        return 2 * self._batch - len(self._waiting) - self._in_hand

    def _queue(self, msg: Msg) -> None:
        # Held from arrival: a slow database must not let the ack wait run out.
        self._heartbeat.hold(msg)
        self._waiting.append(msg)
        self._arrived.set()

    async def _write_batches(self) -> None:
        while True:
            await self._arrived.wait()
            self._arrived.clear()
            while self._waiting:
                async with self._writing:
                    batch = self._waiting[: self._batch]
                    del self._waiting[: self._batch]
                    self._in_hand = len(batch)
                    await settle(batch, self._handler(batch))
                    for msg in batch:
                        self._heartbeat.release(msg)
                    self._in_hand = 0
                self._flow.wake()

    async def stop(self) -> None:
        """Finish the batch being written; what waits unwritten comes back to another replica."""
        await self._flow.stop()
        if self._task is not None:
            async with self._writing:
                self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await _answer(msg.nak() for msg in self._waiting)
        await self._heartbeat.stop()
