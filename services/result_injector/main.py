"""Composition root of the result injector."""

from services.result_injector.app import DEADLINES, DURABLE, Injector
from shared.calls.metering import Price, PriceBook, count_tokens
from shared.contract import subjects
from shared.fabric.broker import build_broker, connect
from shared.fabric.call_marks import CallMarks
from shared.fabric.consumer import WorkConsumer
from shared.fabric.conversations import ConversationVariables
from shared.fabric.deadline_timers import DeadlineTimers
from shared.fabric.messaging import Publisher
from shared.observability import metrics
from shared.process.memory import MemoryBudget
from shared.process.readiness import Readiness
from shared.settings import Settings


def price_book(settings: Settings) -> PriceBook:
    return PriceBook(
        default=Price(per_call=settings.price_per_call, per_1k_tokens=settings.price_per_1k_tokens),
        accounts={
            account: Price.model_validate(price)
            for account, price in settings.account_prices.items()
        },
    )


class ResultInjectorService:
    name = "result-injector"

    def __init__(self, settings: Settings) -> None:
        self.readiness = Readiness()
        self.settings = settings
        self.broker = build_broker(settings, "result-injector", self._reconnected)
        self.consumers: list[WorkConsumer] = []

    def _reconnected(self) -> None:
        for consumer in self.consumers:
            consumer.repull()

    async def start(self) -> None:
        metrics.serve(self.settings.metrics_port, self.settings.host, self.readiness)
        count_tokens("warm")  # loads the vocabulary now, not during the first call
        client, js = await connect(self.broker, self.settings)
        variables = ConversationVariables(await js.key_value(subjects.CONVERSATIONS_BUCKET))
        marks = await CallMarks.of(client)
        injector = Injector(
            Publisher(js), price_book(self.settings), variables, marks, DeadlineTimers(client)
        )
        await self.broker.start()
        memory = MemoryBudget(self.settings.memory_budget_bytes())
        self.consumers = [
            WorkConsumer(
                client,
                DURABLE,
                injector.handle,
                concurrency=self.settings.injector_concurrency,
                memory=memory,
                give_up=injector.give_up,
            ),
            WorkConsumer(
                client,
                DEADLINES,
                injector.on_deadline,
                concurrency=self.settings.injector_concurrency,
                memory=memory,
                give_up=injector.deadline_letters.set_aside,
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
