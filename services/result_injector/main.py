"""Composition root of the result injector."""

from services.result_injector.app import DURABLE, Injector
from shared import metrics, subjects
from shared.broker import build_broker, connect
from shared.call_marks import CallMarks
from shared.consumer import WorkConsumer
from shared.conversations import ConversationVariables
from shared.memory import MemoryBudget
from shared.messaging import Publisher
from shared.metering import Price, PriceBook, count_tokens
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
        self.settings = settings
        self.broker = build_broker(settings.nats_servers(), "result-injector", self._reconnected)
        self.consumer: WorkConsumer | None = None

    def _reconnected(self) -> None:
        if self.consumer is not None:
            self.consumer.repull()

    async def start(self) -> None:
        metrics.serve(self.settings.metrics_port, self.settings.host)
        count_tokens("warm")  # loads the vocabulary now, not during the first call
        client, js = await connect(self.broker)
        variables = ConversationVariables(await js.key_value(subjects.CONVERSATIONS_BUCKET))
        marks = CallMarks(await js.key_value(subjects.CALL_CLAIMS_BUCKET))
        injector = Injector(Publisher(js), price_book(self.settings), variables, marks)
        await self.broker.start()
        self.consumer = WorkConsumer(
            client,
            DURABLE,
            injector.handle,
            concurrency=self.settings.injector_concurrency,
            memory=MemoryBudget(self.settings.memory_budget_bytes()),
            give_up=injector.give_up,
        )
        await self.consumer.start()

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()
        await self.broker.stop()
