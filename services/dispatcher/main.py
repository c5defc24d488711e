"""Composition root of the dispatcher."""

from services.dispatcher.app import DURABLE, REPLAYS, Dispatcher
from services.dispatcher.directory import Directory
from shared.fabric.broker import build_broker, connect
from shared.fabric.call_marks import CallMarks
from shared.fabric.consumer import WorkConsumer
from shared.fabric.deadline_timers import DeadlineTimers
from shared.fabric.messaging import Publisher
from shared.observability import metrics
from shared.process.memory import MemoryBudget
from shared.process.readiness import Readiness
from shared.settings import Settings

# Replays dispatched at once by one dispatcher.
REPLAY_CONCURRENCY = 16


class DispatcherService:
    name = "dispatcher"

    def __init__(self, settings: Settings) -> None:
        self.readiness = Readiness()
        self.settings = settings
        self.directory = Directory()
        self.broker = build_broker(settings, self.name, self._reconnected)
        self.consumers: list[WorkConsumer] = []

    def _reconnected(self) -> None:
        self.directory.rewatch()
        for consumer in self.consumers:
            consumer.repull()

    async def start(self) -> None:
        metrics.serve(self.settings.metrics_port, self.settings.host, self.readiness)
        client, js = await connect(self.broker, self.settings)
        # Tools are in memory before the first call is taken.
        await self.directory.follow(js)
        claims = await CallMarks.of(client)
        dispatcher = Dispatcher(
            Publisher(js),
            self.directory,
            claims,
            DeadlineTimers(client),
            client.max_payload // 2,
            max_callback_s=self.settings.max_callback_timeout_s,
        )
        await self.broker.start()
        self.consumers = [
            WorkConsumer(
                client,
                DURABLE,
                dispatcher.handle,
                concurrency=self.settings.dispatcher_concurrency,
                memory=MemoryBudget(self.settings.memory_budget_bytes()),
                give_up=dispatcher.give_up,
            ),
            # Replays are few and may come by the thousand: a small window keeps them
            # from crowding out live calls.
            WorkConsumer(
                client,
                REPLAYS,
                dispatcher.handle_replay,
                concurrency=REPLAY_CONCURRENCY,
                batch=REPLAY_CONCURRENCY,
                give_up=dispatcher.give_up_replay,
            ),
        ]
        for consumer in self.consumers:
            await consumer.start()
        self.readiness.serving(client)

    async def stop(self) -> None:
        self.readiness.stopping()
        for consumer in self.consumers:
            await consumer.stop()
        await self.broker.stop()
        await self.directory.stop()
