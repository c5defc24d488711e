"""The hot-path consumer on a real nats-server: limits, memory budget, stopping, batches."""

import asyncio

import nats
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from shared.contract import subjects
from shared.fabric.consumer import BatchConsumer, WorkConsumer
from shared.fabric.pull_flow import Durable
from shared.process.memory import MemoryBudget

DURABLE = Durable(subjects.WORK_STREAM, subjects.execute("c-1"), "test-consumer")
ONE_SECOND_S = 1.0


async def publish(js: JetStreamContext, count: int) -> None:
    for n in range(count):
        await js.publish(subjects.execute("c-1"), str(n).encode())


async def until(probe: asyncio.Future[None] | asyncio.Event, timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        await (probe.wait() if isinstance(probe, asyncio.Event) else probe)


async def ack_pending(js: JetStreamContext) -> int:
    info = await js.consumer_info(DURABLE.stream, DURABLE.name)
    return int(info.num_ack_pending or 0)


async def all_acked(js: JetStreamContext) -> None:
    """Poll the consumer's state (the server has no event for it) until nothing is unacked."""
    async with asyncio.timeout(10):
        while True:
            if not await ack_pending(js):
                return
            await asyncio.sleep(0.01)


class Gate:
    """A handler that records what it started and holds it until opened."""

    def __init__(self, expected: int, total: int) -> None:
        self.started: list[bytes] = []
        self.finished: list[bytes] = []
        self.open = asyncio.Event()
        self.all_started = asyncio.Event()
        self.all_finished = asyncio.Event()
        self.expected = expected
        self.total = total

    async def __call__(self, msg: Msg) -> None:
        self.started.append(msg.data)
        if len(self.started) == self.expected:
            self.all_started.set()
        await self.open.wait()
        self.finished.append(msg.data)
        if len(self.finished) == self.total:
            self.all_finished.set()


async def test_at_most_concurrency_messages_are_in_hand_and_all_are_acked(
    streams_client: Client,
) -> None:
    js = streams_client.jetstream()
    gate = Gate(expected=3, total=10)
    consumer = WorkConsumer(streams_client, DURABLE, gate, concurrency=3)
    await consumer.start()
    try:
        await publish(js, 10)
        await until(gate.all_started)
        # The server enforces the same bound (max_ack_pending), so no fourth is delivered.
        assert await ack_pending(js) == 3
        assert len(gate.started) == 3
        gate.open.set()
        await until(gate.all_finished)
        await all_acked(js)
    finally:
        await consumer.stop()
    assert sorted(gate.finished, key=int) == [str(n).encode() for n in range(10)]


class Switch(MemoryBudget):
    """A budget the test decides."""

    def __init__(self) -> None:
        super().__init__(0)
        self.over = True

    def exceeded(self) -> bool:
        return self.over


async def test_over_its_memory_budget_a_consumer_takes_nothing_until_memory_frees(
    streams_client: Client,
) -> None:
    js = streams_client.jetstream()
    budget = Switch()
    handled = asyncio.Event()

    async def handle(_: Msg) -> None:
        handled.set()

    consumer = WorkConsumer(streams_client, DURABLE, handle, concurrency=10, memory=budget)
    await consumer.start()
    try:
        await publish(js, 1)
        info = await js.consumer_info(DURABLE.stream, DURABLE.name)
        assert (info.num_waiting, info.num_pending) == (0, 1)  # not even a pull request
        budget.over = False
        await until(handled)  # within a heartbeat
    finally:
        await consumer.stop()


async def test_stopping_lets_the_messages_in_hand_finish_and_acks_them(
    streams_client: Client,
) -> None:
    js = streams_client.jetstream()
    gate = Gate(expected=2, total=2)
    consumer = WorkConsumer(streams_client, DURABLE, gate, concurrency=2)
    await consumer.start()
    await publish(js, 2)
    await until(gate.all_started)

    stopping = asyncio.create_task(consumer.stop())
    await asyncio.sleep(0)
    assert not stopping.done()  # waits for the work in hand
    gate.open.set()
    await stopping

    assert len(gate.finished) == 2
    await all_acked(js)  # acks are processed by the server after they are sent


async def test_a_batch_consumer_handles_what_arrived_together_in_one_call(
    streams_client: Client,
) -> None:
    js = streams_client.jetstream()
    await publish(js, 50)
    batches: list[int] = []
    all_seen = asyncio.Event()

    async def write(batch: list[Msg]) -> None:
        batches.append(len(batch))
        if sum(batches) == 50:
            all_seen.set()

    consumer = BatchConsumer(streams_client, DURABLE, write, batch=64)
    await consumer.start()
    try:
        await until(all_seen)
        await all_acked(js)
    finally:
        await consumer.stop()
    assert sum(batches) == 50
    assert len(batches) < 10  # a few transactions, not one per message


SHORT = Durable(DURABLE.stream, DURABLE.subject, DURABLE.name, ack_wait_s=1.0)


async def test_work_in_hand_past_its_ack_wait_is_not_redelivered(streams_client: Client) -> None:
    js = streams_client.jetstream()
    gate = Gate(expected=1, total=1)
    consumer = WorkConsumer(streams_client, SHORT, gate, concurrency=4)
    await consumer.start()
    try:
        await publish(js, 1)
        await until(gate.all_started)
        # Three ack waits with the call in hand: heartbeats keep it ours.
        await asyncio.sleep(3 * SHORT.ack_wait_s)
        info = await js.consumer_info(SHORT.stream, SHORT.name)
        assert (info.num_redelivered, info.num_ack_pending) == (0, 1)
        gate.open.set()
        await until(gate.all_finished)
        await all_acked(js)
    finally:
        await consumer.stop()
    assert gate.started == [b"0"]


async def test_a_dead_consumers_work_goes_to_another_within_the_ack_wait(
    streams_client: Client, nats_url: str
) -> None:
    dying = await nats.connect(nats_url)
    stuck = Gate(expected=1, total=1)
    first = WorkConsumer(dying, SHORT, stuck, concurrency=4)
    await first.start()
    await publish(streams_client.jetstream(), 1)
    await until(stuck.all_started)
    await dying.close()  # no ack, no more heartbeats: as if the process were killed

    taken_over: asyncio.Future[tuple[bytes, int]] = asyncio.get_running_loop().create_future()

    async def survivor(msg: Msg) -> None:
        taken_over.set_result((msg.data, msg.metadata.num_delivered or 0))

    second = WorkConsumer(streams_client, SHORT, survivor, concurrency=4)
    await second.start()
    try:
        async with asyncio.timeout(SHORT.ack_wait_s + 3):
            assert await taken_over == (b"0", 2)
    finally:
        await second.stop()
        stuck.open.set()  # its ack goes nowhere: the connection is closed
        await first.stop()


async def test_a_failure_no_retry_fixes_is_given_up_at_once_and_acked(
    streams_client: Client,
) -> None:
    js = streams_client.jetstream()
    given_up: asyncio.Future[tuple[int, str]] = asyncio.get_running_loop().create_future()

    async def broken(msg: Msg) -> None:
        raise ValueError("cannot take this input")

    async def give_up(msg: Msg, failure: Exception) -> None:
        given_up.set_result((msg.metadata.num_delivered or 0, str(failure)))

    consumer = WorkConsumer(streams_client, DURABLE, broken, concurrency=4, give_up=give_up)
    await consumer.start()
    try:
        await publish(js, 1)
        async with asyncio.timeout(ONE_SECOND_S):
            assert await given_up == (1, "cannot take this input")
        await all_acked(js)
        info = await js.consumer_info(DURABLE.stream, DURABLE.name)
        assert (info.num_redelivered, info.num_pending) == (0, 0)
    finally:
        await consumer.stop()


async def test_a_nats_outage_is_retried_not_given_up(streams_client: Client) -> None:
    js = streams_client.jetstream()
    deliveries: list[int] = []
    done = asyncio.Event()

    async def flaky(msg: Msg) -> None:
        deliveries.append(msg.metadata.num_delivered or 0)
        if len(deliveries) == 1:
            raise nats.errors.TimeoutError
        done.set()

    async def give_up(msg: Msg, failure: Exception) -> None:
        raise AssertionError(f"gave up on a transient failure: {failure!r}")

    consumer = WorkConsumer(streams_client, DURABLE, flaky, concurrency=4, give_up=give_up)
    await consumer.start()
    try:
        await publish(js, 1)
        await until(done)
        await all_acked(js)
    finally:
        await consumer.stop()
    assert deliveries == [1, 2]


async def test_a_message_that_never_settles_is_given_up_after_max_deliver(
    streams_client: Client,
) -> None:
    js = streams_client.jetstream()
    limited = Durable(DURABLE.stream, DURABLE.subject, "test-limited", max_deliver=3)
    deliveries: list[int] = []
    given_up: asyncio.Future[tuple[bytes, str]] = asyncio.get_running_loop().create_future()

    async def always_out(msg: Msg) -> None:
        deliveries.append(msg.metadata.num_delivered or 0)
        raise nats.errors.TimeoutError  # transient every time: retried, never given up by it

    async def give_up(msg: Msg, failure: Exception) -> None:
        given_up.set_result((msg.data, f"{type(failure).__name__}: {failure}"))

    consumer = WorkConsumer(streams_client, limited, always_out, concurrency=4, give_up=give_up)
    await consumer.start()
    try:
        await publish(js, 1)
        async with asyncio.timeout(10):
            assert await given_up == (b"0", "DeliveriesExhausted: delivered 3 times without an end")
        assert deliveries == [1, 2, 3]
        # Then gone from the work queue, as an ack would have removed it.
        async with asyncio.timeout(5):
            while True:  # the server has no event for it
                if not (await js.stream_info(DURABLE.stream)).state.messages:
                    break
                await asyncio.sleep(0.01)
    finally:
        await consumer.stop()
