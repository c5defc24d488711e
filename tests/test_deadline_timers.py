"""Deadline timers kept by nats-server: they fire on time, once, and outlive a restart."""

import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig

from services.result_injector.app import DEADLINES
from shared.contract import subjects
from shared.fabric import jetstream
from shared.fabric.deadline_timers import CALL_KEY_HEADER, DeadlineTimers
from shared.fabric.nats_server import NatsServer

TIMERS_STREAM = subjects.TIMERS_STREAM

# The server never sets its schedule timer under 250 ms; the rest is CI slack.
LATE_BOUND_S = 1.0


def key(call_id: str) -> str:
    return hashlib.sha256(call_id.encode()).hexdigest()


async def connect(url: str) -> tuple[Client, JetStreamContext]:
    client = await nats.connect(url)
    return client, client.jetstream()


async def setup(js: JetStreamContext) -> None:
    await jetstream.ensure(js)
    await js.add_consumer(
        TIMERS_STREAM,
        ConsumerConfig(
            durable_name=DEADLINES.name,
            filter_subject=DEADLINES.subject,
            ack_policy=AckPolicy.EXPLICIT,
        ),
    )


async def next_deadline(js: JetStreamContext, within_s: float) -> Msg:
    """The next fired deadline, acked, as a replica takes it (a pull waits for it)."""
    replica = await js.pull_subscribe_bind(DEADLINES.name, TIMERS_STREAM)
    try:
        [msg] = await replica.fetch(1, timeout=within_s)
    finally:
        await replica.unsubscribe()
    await msg.ack_sync()
    return msg


def soon(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


@pytest.fixture
async def client(nats_url: str) -> AsyncIterator[Client]:
    connection, context = await connect(nats_url)
    await setup(context)
    yield connection
    await connection.close()


@pytest.fixture
def js(client: Client) -> JetStreamContext:
    return client.jetstream()


async def test_a_deadline_reaches_a_replica_at_its_time_after_the_armer_is_gone(
    nats_url: str, js: JetStreamContext
) -> None:
    armer = await nats.connect(nats_url)
    at = soon(1.0)
    await DeadlineTimers(armer).arm("conv-1", key("c1"), at, b"deadline c1")
    await armer.close()  # the process that armed it dies

    msg = await next_deadline(js, within_s=1.0 + LATE_BOUND_S)
    received = datetime.now(UTC)

    assert msg.subject == subjects.deadline("conv-1")
    assert msg.data == b"deadline c1"
    assert msg.headers is not None
    assert msg.headers[CALL_KEY_HEADER] == key("c1")
    assert at <= msg.metadata.timestamp <= received <= at + timedelta(seconds=LATE_BOUND_S)
    # Fired and acked: neither the definition nor the deadline is left behind.
    assert (await js.stream_info(TIMERS_STREAM)).state.messages == 0


async def test_a_deadline_already_past_fires_at_once(client: Client, js: JetStreamContext) -> None:
    await DeadlineTimers(client).arm("conv-1", key("c1"), soon(-5.0), b"late")

    assert (await next_deadline(js, within_s=LATE_BOUND_S)).data == b"late"


async def test_a_re_sent_arm_fires_once(client: Client, js: JetStreamContext) -> None:
    timers = DeadlineTimers(client)
    at = soon(0.5)
    await timers.arm("conv-1", key("c1"), at, b"first")
    await timers.arm("conv-1", key("c1"), at, b"again")
    # Fires after c1's timer: the durable delivers in stream order, so anything
    # c1 fired arrives before it.
    await timers.arm("conv-1", key("sentinel"), at + timedelta(seconds=0.3), b"sentinel")

    assert (await next_deadline(js, within_s=0.5 + LATE_BOUND_S)).data == b"first"
    assert (await next_deadline(js, within_s=0.3 + LATE_BOUND_S)).data == b"sentinel"
    # Re-sent after it fired: still within the duplicate window, so not armed again.
    await timers.arm("conv-1", key("c1"), soon(-1.0), b"after")
    await timers.arm("conv-1", key("sentinel-2"), soon(-1.0), b"sentinel-2")
    assert (await next_deadline(js, within_s=LATE_BOUND_S)).data == b"sentinel-2"


async def test_a_disarmed_deadline_never_fires(client: Client, js: JetStreamContext) -> None:
    timers = DeadlineTimers(client)
    at = soon(0.5)
    await timers.arm("conv-1", key("c1"), at, b"c1")
    await timers.disarm("conv-1", key("c1"))
    await timers.disarm("conv-1", key("never-armed"))
    await timers.arm("conv-1", key("c1"), at, b"c1 re-sent")  # a late re-send stays cancelled
    # Fires after c1's would have: the durable delivers in stream order.
    await timers.arm("conv-1", key("sentinel"), at + timedelta(seconds=0.3), b"sentinel")

    assert (await next_deadline(js, within_s=0.8 + LATE_BOUND_S)).data == b"sentinel"


@pytest.mark.parametrize("stop", ["sigterm", "sigkill"])
async def test_a_deadline_outlives_a_nats_server_restart(tmp_path: Path, stop: str) -> None:
    server = NatsServer(tmp_path / "nats")
    url = server.start()
    try:
        client, js = await connect(url)
        await setup(js)
        at = soon(1.5)
        await DeadlineTimers(client).arm("conv-1", key("c1"), at, b"c1")
        await client.close()
        if stop == "sigterm":
            await server.astop()
        else:
            server.kill()

        server = NatsServer(tmp_path / "nats")  # same store directory
        client, js = await connect(server.start())
        assert datetime.now(UTC) < at  # back before the deadline
        msg = await next_deadline(js, within_s=1.5 + LATE_BOUND_S)
        assert msg.data == b"c1"
        assert at <= datetime.now(UTC) <= at + timedelta(seconds=LATE_BOUND_S)
        await client.close()
    finally:
        await server.astop()


async def test_a_deadline_is_refused_naive_or_too_far_ahead(client: Client) -> None:
    timers = DeadlineTimers(client)
    with pytest.raises(ValueError, match="timezone-aware"):
        await timers.arm("conv-1", key("c1"), datetime.now(), b"")
    with pytest.raises(ValueError, match="ahead"):
        await timers.arm("conv-1", key("c1"), soon(600.0), b"")
