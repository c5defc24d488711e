"""Composition root of the dispatcher."""

from services.dispatcher.app import Dispatcher, register
from services.dispatcher.claims import Claims
from services.dispatcher.directory import Directory
from shared import subjects
from shared.broker import build_broker, connect
from shared.settings import Settings


class DispatcherService:
    name = "dispatcher"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.directory = Directory()
        self.broker = build_broker(settings.nats_servers(), self.name, self.directory.rewatch)

    async def start(self) -> None:
        _, js = await connect(self.broker)
        # Tools are in memory before the first call is taken.
        catalog = await js.stream_info(f"KV_{subjects.CATALOG_BUCKET}")
        await self.directory.follow(
            await js.key_value(subjects.CATALOG_BUCKET), catalog.state.last_seq
        )
        claims = Claims(await js.key_value(subjects.CALL_CLAIMS_BUCKET))
        dispatcher = Dispatcher(self.broker, self.directory, claims)
        register(self.broker, dispatcher, self.settings.dispatcher_concurrency)
        await self.broker.start()

    async def stop(self) -> None:
        await self.broker.stop()
        await self.directory.stop()
