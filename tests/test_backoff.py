"""A handler that fails unexpectedly gets its message back later, never in a tight loop."""

import asyncio
import time

from faststream.nats import NatsMessage

from shared import subjects
from shared.broker import FIRST_RETRY_S, build_broker, connect, consume_work


async def test_a_failed_message_comes_back_after_a_delay_then_is_acked(nats_url: str) -> None:
    broker = build_broker(nats_url, "test")
    deliveries: list[tuple[float, int]] = []
    done = asyncio.Event()

    async def flaky(message: NatsMessage) -> None:
        deliveries.append((time.monotonic(), message.raw_message.metadata.num_delivered or 0))
        if len(deliveries) == 1:
            raise RuntimeError("a dependency is down")
        done.set()

    consume_work(
        broker,
        flaky,
        subject=subjects.execute("c-1"),
        stream=subjects.WORK_STREAM,
        durable="test-backoff",
        concurrency=4,
        title="t",
        description="t",
    )
    _, js = await connect(broker)
    await broker.start()
    try:
        await js.publish(subjects.execute("c-1"), b"{}")
        await asyncio.wait_for(done.wait(), 10)
        async with asyncio.timeout(5):  # the successful delivery is acked, once
            while True:
                info = await js.consumer_info(subjects.WORK_STREAM, "test-backoff")
                if not info.num_ack_pending:
                    break
                await asyncio.sleep(0.01)
    finally:
        await broker.stop()

    (first, _), (second, delivered) = deliveries  # exactly two deliveries
    assert delivered == 2
    assert second - first >= FIRST_RETRY_S * 0.9
