"""Consuming a JetStream durable as a continuous flow of work, on the service's own connection.

FastStream's per-message pipeline (middlewares, dependency resolution, a
pull per message) cost most of every service's CPU, so the hot path uses
nats-py directly, the way nats.go's ``Consume`` does:

- messages arrive through a ``PullFlow`` (``shared.fabric.pull_flow``), as soon as
  they exist and many per pull request;
- each message runs as its own task, up to the consumer's concurrency and
  while the process stays under its memory budget, and is heartbeated while
  in hand, so a short ack wait expires only for a process that died;
- acks are plain publishes (no round trip each); a failure that may pass is
  nacked with a delay growing with its deliveries, one that never will is
  handed to the service's ``give_up``;
- the runtime's W3C trace context travels in the headers: the handler's spans
  continue it, with no span per framework step.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable

from nats.aio.client import Client
from nats.aio.msg import Msg
from opentelemetry import context, propagate

from shared.fabric.exhausted import Exhausted, GiveUp
from shared.fabric.outages import TRANSIENT
from shared.fabric.pull_flow import Durable, PullFlow
from shared.observability.metrics import IN_FLIGHT, REDELIVERIES
from shared.process.memory import MemoryBudget

log = logging.getLogger("midcall.consumer")

Handler = Callable[[Msg], Awaitable[None]]
BatchHandler = Callable[[list[Msg]], Awaitable[None]]

# An unexpected failure is retried after 0.5 s, 1 s, 2 s ... at most every 30 s.
FIRST_RETRY_S = 0.5
LAST_RETRY_S = 30.0


class Retry(Exception):
    """Raised by a handler when the message may succeed later (an outage): nack with a delay."""

    def __init__(self, delay_s: float, reason: str) -> None:
        super().__init__(reason)
        self.delay_s = delay_s


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
    except Retry as retry:
        log.warning("%s comes back in %.1f s: %s", msgs[0].subject, retry.delay_s, retry)
        await _answer(msg.nak(delay=retry.delay_s) for msg in msgs)
    except Exception as failure:
        if (
            give_up is None
            or isinstance(failure, TRANSIENT)
            or not await _gave_up(give_up, msgs, failure)
        ):
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
    """Tells JetStream, for each message in hand, that it is still being worked on.

    Ack waits can then be short (a dead process's work moves on in seconds)
    while a call may wait on its API for up to a minute.
    """

    def __init__(self, interval_s: float) -> None:
        self._interval_s = interval_s
        self._in_hand: dict[int, tuple[Msg, float]] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._beat())

    def hold(self, msg: Msg) -> None:
        self._in_hand[id(msg)] = (msg, time.monotonic())

    def release(self, msg: Msg) -> None:
        self._in_hand.pop(id(msg), None)

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            due = time.monotonic() - self._interval_s
            held = [msg for msg, since in self._in_hand.values() if since <= due]
            for msg in held:
                self._in_hand[id(msg)] = (msg, time.monotonic())
            await _answer(msg.in_progress() for msg in held)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


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
        self._heartbeat = Heartbeat(durable.ack_wait_s / 3)
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
            self._heartbeat.hold(msg)
            if redelivered(msg):
                REDELIVERIES.labels(self._name).inc()
            task = asyncio.create_task(settle([msg], self._traced(msg), self._give_up))
        self._tasks.add(task)
        self._in_flight.inc()
        task.add_done_callback(self._finished)

    async def _traced(self, msg: Msg) -> None:
        # Each task has its own context: the handler's spans continue the caller's trace.
        if msg.headers:
            context.attach(propagate.extract(msg.headers))
        try:
            await self._handler(msg)
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
        self._heartbeat = Heartbeat(durable.ack_wait_s / 3)

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
