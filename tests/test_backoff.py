"""A handler that fails unexpectedly gets its message back later, never in a tight loop."""

import asyncio
import time

import nats
from nats.aio.msg import Msg

from shared.contract import subjects
from shared.fabric import jetstream
from shared.fabric.consumer import FIRST_RETRY_S, WorkConsumer
from shared.fabric.pull_flow import Durable


async def test_a_failed_message_comes_back_after_a_delay_then_is_acked(nats_url: str) -> None:
    client = await nats.connect(nats_url)
    js = client.jetstream()
    await jetstream.ensure(js)
    deliveries: list[tuple[float, int]] = []
    done = asyncio.Event()

    async def flaky(message: Msg) -> None:
        deliveries.append((time.monotonic(), message.metadata.num_delivered or 0))
        if len(deliveries) == 1:
            raise RuntimeError("a dependency is down")
        done.set()

    durable = Durable(subjects.WORK_STREAM, subjects.execute("c-1"), "test-backoff")
    consumer = WorkConsumer(client, durable, flaky, concurrency=4)
    await consumer.start()
    try:
        await js.publish(subjects.execute("c-1"), b"{}")
        await asyncio.wait_for(done.wait(), 10)
        async with asyncio.timeout(5):  # the successful delivery is acked, once
            while True:
                info = await js.consumer_info(subjects.WORK_STREAM, durable.name)
                if not info.num_ack_pending:
                    break
                await asyncio.sleep(0.01)
    finally:
        await consumer.stop()
        await client.close()

    (first, _), (second, delivered) = deliveries  # exactly two deliveries
    assert delivered == 2
    assert second - first >= FIRST_RETRY_S * 0.9
