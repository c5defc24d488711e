"""Billing's composition root: storage, NATS consumers and the REST API, in one process."""

import asyncio

from sqlalchemy import Engine

from services.billing.api import build_app
from services.billing.app import consumers
from services.billing.store import UsageStore
from shared.contract import subjects
from shared.fabric.broker import build_broker, connect
from shared.fabric.consumer import BatchConsumer, WorkConsumer
from shared.process.http_server import HttpServer
from shared.process.storage import build_engine
from shared.security.api_keys import KeyRing, admin_key
from shared.settings import Settings


class BillingService:
    """``shared.process.service.Runnable`` for billing; nothing connects until ``start``."""

    name = "billing"

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._engine: Engine | None = None
        self.broker = build_broker(settings, self.name, self._reconnected)
        self._consumers: tuple[BatchConsumer, WorkConsumer] | None = None
        self._http: HttpServer | None = None

    def _reconnected(self) -> None:
        for consumer in self._consumers or ():
            consumer.repull()

    async def start(self) -> None:
        # Creating (or upgrading) the tables is blocking I/O, slow on a remote PostgreSQL.
        self._engine = await asyncio.to_thread(build_engine, self._settings)
        store = await asyncio.to_thread(UsageStore, self._engine)
        client, js = await connect(self.broker, self._settings)
        await self.broker.start()
        self._consumers = consumers(client, store)
        for consumer in self._consumers:
            await consumer.start()
        keyring = KeyRing(admin_key(self._settings), await js.key_value(subjects.API_KEYS_BUCKET))
        app = build_app(store, keyring)
        self._http = HttpServer(app, self._settings.host, self._settings.billing_port)
        await self._http.start()

    async def stop(self) -> None:
        """Stop answering HTTP, let in-flight messages finish, drain NATS, close the database."""
        if self._http is not None:
            await self._http.stop()
        for consumer in self._consumers or ():
            await consumer.stop()
        await self.broker.stop()
        if self._engine is not None:
            self._engine.dispose()

    @property
    def port(self) -> int:
        """The REST port actually bound (``billing_port=0`` picks a free one); 0 before start."""
        return self._http.port if self._http is not None else 0
