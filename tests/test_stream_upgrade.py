"""Streams made by an older version are brought up to date by ``ensure``."""

from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client
from nats.js.api import ConsumerConfig, StorageType, StreamConfig, StreamConsumerLimits
from nats.js.errors import BadRequestError

from shared.contract import subjects
from shared.fabric import jetstream


@pytest.fixture
async def client(nats_url: str) -> AsyncIterator[Client]:
    connection = await nats.connect(nats_url)
    yield connection
    await connection.close()


async def test_an_old_conv_stream_gives_ended_its_own_stream_and_keeps_its_events(
    client: Client,
) -> None:
    js = client.jetstream()
    # As versions before NATS users made it: every conversation subject in one stream.
    old = StreamConfig(
        name=subjects.CONV_STREAM,
        subjects=[subjects.ALL_CONV],
        storage=StorageType.FILE,
        max_age=jetstream.DAY,
        duplicate_window=120.0,
    )
    await js.add_stream(old)
    await js.publish(subjects.result("c1"), b"{}")
    await js.publish(subjects.ended("c1"), b"{}")

    await jetstream.ensure(js)
    await jetstream.ensure(js)  # a second start changes nothing

    conv = await js.stream_info(subjects.CONV_STREAM)
    assert conv.config.subjects == list(jetstream.CONV_SUBJECTS)
    assert conv.state.messages == 2  # what was stored stays until it ages out
    assert conv.config.max_consumers == jetstream.MAX_CONV_CONSUMERS
    assert conv.config.consumer_limits == jetstream.CONV_CONSUMER_LIMITS
    ack = await js.publish(subjects.ended("c2"), b"{}")
    assert ack.stream == subjects.ENDED_STREAM
    assert (await js.publish(subjects.result("c2"), b"{}")).stream == subjects.CONV_STREAM


async def test_streams_made_before_runtime_credentials_take_each_accounts_ends(
    client: Client,
) -> None:
    js = client.jetstream()
    # As the version before runtime credentials made them (one an operator tuned).
    for name, captured in (
        (subjects.CONV_STREAM, [subjects.ALL_PENDING, subjects.ALL_RESULTS]),
        (subjects.ENDED_STREAM, [subjects.ALL_ENDED]),
    ):
        await js.add_stream(StreamConfig(name=name, subjects=captured, max_age=3600.0))
    await js.publish(subjects.result("c1"), b"{}")

    await jetstream.ensure(js)
    await jetstream.ensure(js)

    conv = await js.stream_info(subjects.CONV_STREAM)
    ended = await js.stream_info(subjects.ENDED_STREAM)
    assert conv.config.subjects == list(jetstream.CONV_SUBJECTS)
    assert ended.config.subjects == list(jetstream.ENDED_SUBJECTS)
    assert (conv.config.max_age, ended.config.max_age) == (3600.0, 3600.0)  # the operator's
    assert conv.state.messages == 1
    landed = [
        (await js.publish(subject, b"{}")).stream
        for subject in (subjects.result("c1", "acme"), subjects.ended("c1", "acme"))
    ]
    assert landed == [subjects.ACCOUNT_CONV_STREAM, subjects.ENDED_STREAM]


async def test_runtimes_consumers_are_bounded_unless_an_operator_chose_bounds(
    client: Client,
) -> None:
    js = client.jetstream()
    await jetstream.ensure(js)
    conv = await js.stream_info(subjects.CONV_STREAM)
    assert conv.config.max_consumers == jetstream.MAX_CONV_CONSUMERS
    assert conv.config.consumer_limits == StreamConsumerLimits(inactive_threshold=60.0)
    lingering = ConsumerConfig(inactive_threshold=61.0)
    with pytest.raises(BadRequestError, match="inactive threshold exceeds system limit of 1m0s"):
        await js.add_consumer(subjects.CONV_STREAM, lingering)
    # Tuned by an operator: kept as they are.
    conv.config.max_consumers = 2
    conv.config.consumer_limits = StreamConsumerLimits(inactive_threshold=120.0)
    await js.update_stream(conv.config)
    await jetstream.ensure(js)
    tuned = (await js.stream_info(subjects.CONV_STREAM)).config
    assert (tuned.max_consumers, tuned.consumer_limits) == (2, conv.config.consumer_limits)
    for _ in range(2):
        await js.add_consumer(subjects.CONV_STREAM, lingering)
    with pytest.raises(BadRequestError, match="maximum consumers limit reached"):
        await js.add_consumer(subjects.CONV_STREAM)
