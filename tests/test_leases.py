"""Leases on a real nats-server: a process that froze past its ack wait sends nothing more.

A freeze (SIGSTOP, a long GC pause, a starved VM) looks to the process like a
``time.sleep`` on its event loop: nothing runs, heartbeats included, while
JetStream's ack wait runs out and the message goes to another replica (here the
same consumer takes it again, as ``num_delivered`` 2). The handlers and senders
below freeze that way on purpose; what the consumers answer JetStream is read
off the wire (``$JS.ACK...``).
"""

import asyncio
import threading
import time
from collections import defaultdict
from typing import Any

import nats
import pytest
from aiohttp import web
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from prometheus_client import REGISTRY

from services.code_executor.egress import Egress
from services.code_executor.execute import CodeRunner
from services.code_executor.sandbox.frames import Frame
from services.code_executor.workers import Call, Pool, Uids
from services.http_executor.execute import Executor
from shared.calls.client import Sender
from shared.calls.render import RenderedRequest
from shared.contract import subjects
from shared.contract.events import ExecuteRequest, ExecutionOutcome, HttpResponse
from shared.contract.tools import Tool
from shared.fabric.call_marks import CallMarks
from shared.fabric.consumer import LeaseLost, WorkConsumer, ensure_held, lease_held
from shared.fabric.conversations import ConversationVariables
from shared.fabric.executors import ExecutorApp, Runner
from shared.fabric.messaging import Publisher
from shared.fabric.pull_flow import Durable
from shared.security.destinations import DestinationPolicy
from shared.security.secret_scope import SecretScope
from tests.factories import work_item
from tests.support.api import RecordingApi

LOOPBACK = DestinationPolicy("127.0.0.1")
# nats-py acks with an empty body, which JetStream reads as +ACK.
ACK, IN_PROGRESS = b"", b"+WPI"


def durable(name: str, kind: str = "http", ack_wait_s: float = 1.0) -> Durable:
    return Durable(subjects.WORK_STREAM, subjects.execute("conv-1", kind), name, ack_wait_s)


def freeze(ack_wait_s: float) -> None:
    """The whole process stops for longer than the ack wait, as a SIGSTOP would stop it."""
    time.sleep(1.5 * ack_wait_s)


async def watch_answers(streams_client: Client, on: Durable) -> Subscription:
    """A core subscription to what consumers answer JetStream: acks, nacks, in_progress."""
    return await streams_client.subscribe(f"$JS.ACK.{on.stream}.{on.name}.>")


async def answers(streams_client: Client, watched: Subscription) -> dict[str, list[bytes]]:
    """What was answered so far, by delivery (each delivery's reply subject)."""
    await streams_client.flush()  # all sent before it is now in the subscription's queue
    said: dict[str, list[bytes]] = defaultdict(list)
    while watched.pending_msgs:
        answer = await watched.next_msg()
        said[answer.subject].append(answer.data)
    return said


async def acked(js: JetStreamContext, on: Durable, seq: int) -> None:
    """Poll the consumer's state (the server has no event for it) until ``seq`` is acked."""
    async with asyncio.timeout(10):
        while True:
            if (await js.consumer_info(on.stream, on.name)).ack_floor.stream_seq >= seq:
                return
            await asyncio.sleep(0.01)


def leases_lost(on: Durable) -> float:
    return REGISTRY.get_sample_value("midcall_leases_lost_total", {"consumer": on.name}) or 0.0


@pytest.mark.parametrize("beat_first", [False, True], ids=["handler-first", "heartbeat-first"])
async def test_a_handler_frozen_past_its_ack_wait_loses_its_lease_and_leaves_the_message(
    streams_client: Client, beat_first: bool
) -> None:
    on = durable(f"test-lease-frozen-{beat_first}")
    js = streams_client.jetstream()
    watched = await watch_answers(streams_client, on)
    deliveries: list[Msg] = []
    lost: list[LeaseLost] = []

    async def frozen_once(msg: Msg) -> None:
        deliveries.append(msg)
        if len(deliveries) == 1:
            freeze(on.ack_wait_s)
            if beat_first:  # on waking, heartbeats run before the handler goes on
                await asyncio.sleep(on.ack_wait_s / 2)
            try:
                ensure_held()
            except LeaseLost as exc:
                lost.append(exc)
                raise
        ensure_held()

    consumer = WorkConsumer(streams_client, on, frozen_once, concurrency=4)
    await consumer.start()
    try:
        sent = await js.publish(on.subject, b"work")
        await acked(js, on, sent.seq)
    finally:
        await consumer.stop()

    said = await answers(streams_client, watched)
    # The redelivery made during the freeze may have waited in the socket through it too,
    # and is then left as well: the one after it is taken.
    numbers = [msg.metadata.num_delivered for msg in deliveries]
    assert numbers in ([1, 2], [1, 2, 3])
    assert len(lost) == 1
    # The frozen delivery is neither acked nor nacked, only heartbeated once awake (which
    # keeps a message JetStream has not given away yet); the last delivery is acked.
    heartbeats = said[deliveries[0].reply]
    assert heartbeats == ([IN_PROGRESS] * len(heartbeats) if beat_first else [])
    assert said[deliveries[-1].reply] == [ACK]
    assert leases_lost(on) == len(deliveries) - 1


async def test_a_message_that_waited_in_the_socket_through_a_freeze_is_not_ours(
    nats_url: str, streams_client: Client
) -> None:
    """Delivered while the process stood still, read when it woke: JetStream's ack wait ran
    all along, so the message may be another replica's already."""
    on = durable("test-lease-buffered")
    heard: list[tuple[int, bool]] = []
    done = asyncio.Event()

    async def handler(msg: Msg) -> None:
        heard.append((msg.metadata.num_delivered or 1, lease_held()))
        if heard[-1][1]:
            done.set()
        ensure_held()

    consumer = WorkConsumer(streams_client, on, handler, concurrency=4)
    await consumer.start()
    try:
        await streams_client.flush()  # the pull request is at the server
        # Published from elsewhere (a thread with a loop of its own) while this one is frozen.
        elsewhere = threading.Thread(target=asyncio.run, args=(publish(nats_url, on.subject),))
        elsewhere.start()
        freeze(on.ack_wait_s)
        elsewhere.join()
        async with asyncio.timeout(10):
            await done.wait()
    finally:
        await consumer.stop()

    # Read after the freeze: not held, though just read. The next delivery is held.
    assert heard[0] == (1, False)
    num_delivered, held = heard[-1]
    assert held
    assert num_delivered > 1


async def publish(url: str, subject: str) -> None:
    other = await nats.connect(url)
    try:
        await other.jetstream().publish(subject, b"work")
    finally:
        await other.close()


async def test_a_handler_that_awaits_past_its_ack_wait_keeps_its_lease(
    streams_client: Client,
) -> None:
    on = durable("test-lease-kept", ack_wait_s=2.0)
    js = streams_client.jetstream()
    watched = await watch_answers(streams_client, on)
    deliveries: list[Msg] = []

    async def patient(msg: Msg) -> None:
        deliveries.append(msg)
        await asyncio.sleep(1.5 * on.ack_wait_s)  # the loop runs: heartbeats renew the lease
        ensure_held()

    consumer = WorkConsumer(streams_client, on, patient, concurrency=4)
    await consumer.start()
    try:
        sent = await js.publish(on.subject, b"work")
        await acked(js, on, sent.seq)
        info = await js.consumer_info(on.stream, on.name)
    finally:
        await consumer.stop()

    said = (await answers(streams_client, watched))[deliveries[0].reply]
    assert (len(deliveries), info.num_redelivered) == (1, 0)
    assert len(said) >= 2
    assert said == [IN_PROGRESS] * (len(said) - 1) + [ACK]
    assert leases_lost(on) == 0


def test_outside_a_consumers_task_there_is_no_lease_to_lose() -> None:
    ensure_held()  # a replay, a unit test: nothing raised
    assert lease_held()


async def executed(
    streams_client: Client, on: Durable, runner: Runner, work: ExecuteRequest
) -> Any:
    """``work`` run by an executor consuming ``on``: the outcome it published, once acked."""
    js = streams_client.jetstream()
    marks = await CallMarks.of(streams_client)
    app = ExecutorApp(Publisher(js), runner, marks)
    outcomes = await streams_client.subscribe(subjects.executed(work.call.conversation_id))
    consumer = WorkConsumer(streams_client, on, app.handle, concurrency=4, give_up=app.give_up)
    await consumer.start()
    try:
        sent = await js.publish(on.subject, work.model_dump_json().encode())
        published = await outcomes.next_msg(timeout=10)
        await acked(js, on, sent.seq)
    finally:
        await consumer.stop()
    await streams_client.flush()
    assert outcomes.pending_msgs == 0  # one outcome, from the delivery that held its lease
    return ExecutionOutcome.model_validate_json(published.data)


class FrozenAfterFirstAnswer(Sender):
    """A real sender whose process freezes once, as the API's first answer comes in."""

    frozen = False

    async def send(self, request: RenderedRequest, timeout_s: float) -> HttpResponse:
        answer = await super().send(request, timeout_s)
        if not self.frozen:
            self.frozen = True
            freeze(1.0)
        return answer


async def test_an_http_retry_due_after_a_freeze_is_not_sent(
    streams_client: Client, api: RecordingApi
) -> None:
    on = durable("test-lease-http")
    statuses = iter((503, 200))

    async def flaky(_: web.Request) -> web.StreamResponse:
        return web.json_response({}, status=next(statuses))

    api.route("PUT", "/book", flaky)
    retry = {"attempts": 3, "on": ["http_5xx"], "backoff_s": 0.001}
    work = work_item({"url": f"{api.url}/book", "method": "PUT", "retry": retry})
    sender = FrozenAfterFirstAnswer(4, LOOPBACK, 1 << 20)
    try:
        outcome = await executed(streams_client, on, Executor(sender, LOOPBACK, {}), work)
    finally:
        await sender.close()

    # The 503 before the freeze, then the redelivery's first attempt: no retry in between.
    assert len(api.received) == 2
    assert outcome.response is not None
    assert (outcome.response.status, outcome.attempts) == (200, 1)
    assert leases_lost(on) in (1, 2)  # 2: the redelivery waited in the socket through the freeze


class FunctionAskingOnce(Pool):
    """In place of the jails: a function that asks the egress for one request (as the jail's
    link does, in a copy of the call's context) and answers its reply; the executor's process
    freezes, once, as the function asks."""

    def __init__(self, url: str) -> None:
        super().__init__(None, Uids(None), 4, 60.0, "no jail in this test")
        self.url = url
        self.replies: list[dict[str, Any]] = []

    async def run(self, account: str, job: dict[str, Any], call: Call) -> dict[str, Any]:
        if not self.replies:
            freeze(1.0)

        async def ask() -> Frame:
            return await call.egress({"method": "GET", "url": self.url, "headers": []}, b"")

        reply, _ = await asyncio.create_task(ask(), context=call.context.copy())
        self.replies.append(reply)
        return {"result": reply}


async def test_a_functions_request_after_a_freeze_is_not_sent_nor_its_answer_told(
    streams_client: Client, api: RecordingApi
) -> None:
    on = durable("test-lease-code", "python")
    api.reply("GET", "/ping", json={"pong": True})
    python = {"code": "async def tool(ctx):\n    return {}\n", "function": "tool"}
    tool = Tool.model_validate({"name": "T", "kind": "python", "python": python})
    work = work_item({"url": "https://api.example.com/unused"}).model_copy(update={"tool": tool})
    pool = FunctionAskingOnce(f"{api.url}/ping")
    sender = Sender(4, LOOPBACK, 1 << 20)
    variables = ConversationVariables(
        await streams_client.jetstream().key_value(subjects.CONVERSATIONS_BUCKET)
    )
    runner = CodeRunner(pool, Egress(sender, LOOPBACK), SecretScope({}), variables)
    try:
        outcome = await executed(streams_client, on, runner, work)
    finally:
        await sender.close()

    # The frozen run's request was refused, not sent, and its answer not told.
    assert [reply.get("error", reply.get("status")) for reply in pool.replies] == ["connect", 200]
    assert len(api.received) == 1
    assert outcome.response is not None
    assert outcome.response.status == 200
    assert leases_lost(on) in (1, 2)  # 2: the redelivery waited in the socket through the freeze
