"""Composition root of the result injector."""

from services.result_injector.app import Injector, register
from shared import subjects
from shared.broker import build_broker, connect
from shared.conversations import ConversationVariables
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
        self.broker = build_broker(settings.nats_servers(), "result-injector")

    async def start(self) -> None:
        count_tokens("warm")  # loads the vocabulary now, not during the first call
        _, js = await connect(self.broker)
        variables = ConversationVariables(await js.key_value(subjects.CONVERSATIONS_BUCKET))
        register(
            self.broker,
            Injector(self.broker, price_book(self.settings), variables),
            self.settings.injector_concurrency,
        )
        await self.broker.start()

    async def stop(self) -> None:
        await self.broker.stop()
