"""Composition root of the dispatcher."""

from services.dispatcher.app import DURABLE, Dispatcher
from services.dispatcher.directory import Directory
from shared import metrics, subjects
from shared.broker import build_broker, connect
from shared.call_marks import CallMarks
from shared.consumer import WorkConsumer
from shared.memory import MemoryBudget
from shared.messaging import Publisher
from shared.settings import Settings


class DispatcherService:
    name = "dispatcher"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.directory = Directory()
        self.broker = build_broker(settings.nats_servers(), self.name, self._reconnected)
        self.consumer: WorkConsumer | None = None

    def _reconnected(self) -> None:
        self.directory.rewatch()
        if self.consumer is not None:
            self.consumer.repull()

    async def start(self) -> None:
        metrics.serve(self.settings.metrics_port, self.settings.host)
        client, js = await connect(self.broker)
        # Tools are in memory before the first call is taken.
        catalog = await js.stream_info(f"KV_{subjects.CATALOG_BUCKET}")
        await self.directory.follow(
            await js.key_value(subjects.CATALOG_BUCKET), catalog.state.last_seq
        )
        claims = CallMarks(await js.key_value(subjects.CALL_CLAIMS_BUCKET))
        dispatcher = Dispatcher(Publisher(js), self.directory, claims, client.max_payload // 2)
        await self.broker.start()
        self.consumer = WorkConsumer(
            client,
            DURABLE,
            dispatcher.handle,
            concurrency=self.settings.dispatcher_concurrency,
            memory=MemoryBudget(self.settings.memory_budget_bytes()),
            give_up=dispatcher.give_up,
        )
        await self.consumer.start()

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()
        await self.broker.stop()
        await self.directory.stop()
