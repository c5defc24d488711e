"""The registry's composition root: SQL, the catalog bucket and the REST server."""

import asyncio

from sqlalchemy import Engine

from services.registry import (
    accounts_api,
    callbacks_api,
    conversations,
    failed_api,
    failure_intake,
    runtime_credentials_api,
    secrets_api,
)
from services.registry.accounts import AccountStore
from services.registry.api import build_app
from services.registry.bucket_mirror import BucketMirror
from services.registry.catalog_writer import CatalogWriter
from services.registry.failures import FailureStore, upgrade_keys
from services.registry.replays import Replayer
from services.registry.runtime_credentials import RuntimeCredentialStore
from services.registry.sandbox_check import SandboxCheck
from services.registry.secret_keeper import SecretKeeper
from services.registry.secret_store import SecretStore
from services.registry.store import ToolStore
from services.registry.stored_events import StoredEventsService
from shared.contract import subjects
from shared.contract.catalog import AgentEntry
from shared.contract.tools import Tool
from shared.fabric.broker import build_broker, connect
from shared.fabric.call_marks import CallMarks
from shared.fabric.consumer import BatchConsumer
from shared.fabric.conversations import ConversationVariables
from shared.fabric.messaging import Publisher
from shared.process.http_server import HttpServer
from shared.process.storage import build_engine
from shared.security.api_keys import KeyRing, admin_key
from shared.security.callback_tokens import signing_key
from shared.security.secret_box import SecretBox, settings_master_key
from shared.settings import Settings


class RegistryService:
    """Serves the REST API once the catalog bucket matches SQL."""

    name = "registry"

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._engine: Engine | None = None
        self.broker = build_broker(settings, self.name, self._reconnected)
        self._http: HttpServer | None = None
        self._consumers: list[BatchConsumer] = []

    def _reconnected(self) -> None:
        for consumer in self._consumers:
            consumer.repull()

    async def start(self) -> None:
        # Creating tables is blocking I/O; the store module is imported, so they are known.
        self._engine = await asyncio.to_thread(build_engine, self._settings)
        store = ToolStore(self._engine)
        failures = FailureStore(self._engine)
        await asyncio.to_thread(upgrade_keys, self._engine)
        accounts = AccountStore(self._engine)
        client, js = await connect(self.broker, self._settings)
        await self.broker.start()
        writer = await CatalogWriter.open(js)
        await writer.sync(*await asyncio.to_thread(_snapshot, store))
        keys = await BucketMirror.open(js, subjects.API_KEYS_BUCKET)
        await accounts_api.sync_keys(accounts, keys)
        keyring = KeyRing(admin_key(self._settings), await js.key_value(subjects.API_KEYS_BUCKET))
        master = await asyncio.to_thread(settings_master_key, self._settings)
        box = SecretBox(master)
        secrets = await SecretKeeper.open(js, SecretStore(self._engine), box)
        await secrets.sync()
        sandbox = SandboxCheck(client)
        app = build_app(store, writer, keyring, secrets, self._settings.python_modules(), sandbox)
        app.include_router(accounts_api.build_router(accounts, keys))
        app.include_router(secrets_api.build_router(accounts, secrets))
        runtimes = RuntimeCredentialStore(self._engine)
        credentials = await BucketMirror.open(js, subjects.RUNTIME_CREDENTIALS_BUCKET)
        await runtime_credentials_api.sync_credentials(runtimes, credentials)
        app.include_router(runtime_credentials_api.build_router(accounts, runtimes, credentials))
        kv = await js.key_value(subjects.CONVERSATIONS_BUCKET)
        app.include_router(conversations.build_router(ConversationVariables(kv)))
        replayer = Replayer(failures, store, Publisher(js))
        app.include_router(failed_api.build_router(failures, replayer))
        callbacks = callbacks_api.Callbacks(
            signing_key(master),
            await js.key_value(subjects.CALLBACKS_BUCKET),
            await CallMarks.of(client),
            Publisher(js),
        )
        app.include_router(callbacks_api.build_router(callbacks, self._settings.max_response_bytes))
        await StoredEventsService(client).start()
        self._consumers = failure_intake.consumers(client, failures)
        for consumer in self._consumers:
            await consumer.start()
        settings = self._settings
        self._http = HttpServer(app, settings.host, settings.registry_port)
        await self._http.start()

    async def stop(self) -> None:
        """Stop taking requests, drain NATS, then close the database pool."""
        if self._http is not None:
            await self._http.stop()
        for consumer in self._consumers:
            await consumer.stop()
        await self.broker.stop()
        if self._engine is not None:
            self._engine.dispose()

    @property
    def port(self) -> int:
        """The bound HTTP port (useful when the settings asked for port 0)."""
        return self._http.port if self._http is not None else 0


def _snapshot(store: ToolStore) -> tuple[list[AgentEntry], list[tuple[str, Tool]]]:
    return store.all_agents(), store.all_tools()
