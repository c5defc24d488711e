"""Composition root of the HTTP executor."""

import asyncio

from services.http_executor.completions import Completions
from services.http_executor.execute import Executor
from shared.calls.client import Sender, sender_for
from shared.contract import subjects
from shared.fabric.broker import build_broker, connect
from shared.fabric.call_marks import CallMarks
from shared.fabric.consumer import WorkConsumer
from shared.fabric.executors import ExecutorApp, durable, listen, work_consumer
from shared.fabric.messaging import Publisher
from shared.observability import metrics
from shared.process.readiness import Readiness
from shared.security.callback_tokens import CallbackHeaders, signing_key
from shared.security.secret_box import settings_master_key
from shared.security.secret_scope import open_scope
from shared.settings import Settings, secrets_from_env

# Calls mostly wait on APIs: pull many at a time so a burst is taken in quickly.
PULL_BATCH = 256
DURABLE = durable(subjects.ALL_EXEC, "midcall-http-executor")


class HttpExecutorService:
    name = "http-executor"

    def __init__(self, settings: Settings, secrets: dict[str, str] | None = None) -> None:
        """``secrets``: the platform's (default ``MIDCALL_SECRET_*``), for admin-made tools."""
        self.readiness = Readiness()
        self.settings = settings
        self.secrets = secrets_from_env() if secrets is None else secrets
        self.broker = build_broker(settings, "http-executor", self._reconnected)
        self.sender: Sender | None = None
        self.consumer: WorkConsumer | None = None
        self.completions = Completions()

    def _reconnected(self) -> None:
        if self.consumer is not None:
            self.consumer.repull()
        self.completions.reconnected()

    async def start(self) -> None:
        metrics.serve(self.settings.metrics_port, self.settings.host, self.readiness)
        client, js = await connect(self.broker, self.settings)
        self.sender, policy = sender_for(self.settings, client.max_payload)
        marks = await CallMarks.of(client)
        secrets = await open_scope(js, self.settings, self.secrets)
        await self.completions.start(js, marks)
        master = await asyncio.to_thread(settings_master_key, self.settings)
        callbacks = CallbackHeaders(signing_key(master), self.settings.callback_url())
        executor = Executor(self.sender, policy, secrets, None, callbacks, self.completions)
        app = ExecutorApp(Publisher(js), executor, marks)
        await listen(client, app)
        await self.broker.start()
        self.consumer = work_consumer(client, DURABLE, app, self.settings, PULL_BATCH)
        await self.consumer.start()
        self.readiness.serving(client)

    async def stop(self) -> None:
        self.readiness.stopping()
        self.completions.release()
        if self.consumer is not None:
            await self.consumer.stop()
        await self.completions.stop()
        await self.broker.stop()
        if self.sender is not None:
            await self.sender.close()
