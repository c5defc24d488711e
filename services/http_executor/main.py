"""Composition root of the HTTP executor."""

import asyncio

from services.http_executor.execute import Executor
from shared.calls.client import Sender, connection_limit
from shared.contract import subjects
from shared.fabric.broker import build_broker, connect
from shared.fabric.call_marks import CallMarks
from shared.fabric.consumer import WorkConsumer
from shared.fabric.executors import ExecutorApp, durable, register
from shared.fabric.messaging import Publisher
from shared.observability import metrics
from shared.process.memory import MemoryBudget
from shared.security.destinations import DestinationPolicy
from shared.security.secret_box import SecretBox, settings_master_key
from shared.security.secret_scope import AccountSecrets, SecretScope
from shared.settings import Settings, secrets_from_env

# Calls mostly wait on APIs: pull many at a time so a burst is taken in quickly.
PULL_BATCH = 256
DURABLE = durable(subjects.ALL_EXEC, "midcall-http-executor")


class HttpExecutorService:
    name = "http-executor"

    def __init__(self, settings: Settings, secrets: dict[str, str] | None = None) -> None:
        """``secrets``: the platform's (default ``MIDCALL_SECRET_*``), for admin-made tools."""
        self.settings = settings
        self.secrets = secrets_from_env() if secrets is None else secrets
        self.broker = build_broker(settings, "http-executor", self._reconnected)
        self.sender: Sender | None = None
        self.consumer: WorkConsumer | None = None

    def _reconnected(self) -> None:
        if self.consumer is not None:
            self.consumer.repull()

    async def start(self) -> None:
        metrics.serve(self.settings.metrics_port, self.settings.host)
        client, js = await connect(self.broker, self.settings)
        # A response must fit in one NATS message with its envelope.
        cap = min(self.settings.max_response_bytes, client.max_payload - 64 * 1024)
        policy = DestinationPolicy(self.settings.allow_destinations)
        connections = connection_limit(self.settings.max_connections)
        self.sender = Sender(connections, policy, cap)
        marks = CallMarks(await js.key_value(subjects.CALL_CLAIMS_BUCKET))
        box = SecretBox(await asyncio.to_thread(settings_master_key, self.settings))
        accounts = AccountSecrets(await js.key_value(subjects.SECRETS_BUCKET), box)
        secrets = SecretScope(self.secrets, accounts)
        app = ExecutorApp(Publisher(js), Executor(self.sender, policy, secrets), marks)
        register(self.broker, app)
        await self.broker.start()
        self.consumer = WorkConsumer(
            client,
            DURABLE,
            app.handle,
            concurrency=self.settings.executor_concurrency,
            batch=PULL_BATCH,
            memory=MemoryBudget(self.settings.memory_budget_bytes()),
            give_up=app.give_up,
        )
        await self.consumer.start()

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()
        await self.broker.stop()
        if self.sender is not None:
            await self.sender.close()
