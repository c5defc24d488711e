"""Composition root of the code-executor."""

import asyncio
import contextlib
import json
import logging
import os

from nats.aio.msg import Msg

from services.code_executor.egress import Egress
from services.code_executor.execute import CodeRunner
from services.code_executor.jail import Jail, SandboxUnavailable
from services.code_executor.workers import Pool, Uids
from shared.calls.client import Sender, sender_for
from shared.contract import subjects
from shared.fabric.broker import build_broker, connect
from shared.fabric.call_marks import CallMarks
from shared.fabric.consumer import WorkConsumer
from shared.fabric.conversations import ConversationVariables
from shared.fabric.executors import ExecutorApp, durable, listen, work_consumer
from shared.fabric.messaging import Publisher
from shared.observability import metrics
from shared.process.readiness import Readiness
from shared.security.secret_scope import open_scope
from shared.settings import Settings, secrets_from_env

log = logging.getLogger("midcall.code_executor")
DURABLE = durable(subjects.ALL_CODE, "midcall-code-executor")
PULL_BATCH = 64


class CodeExecutorService:
    name = "code-executor"

    def __init__(self, settings: Settings, secrets: dict[str, str] | None = None) -> None:
        """``secrets``: the platform's (default ``MIDCALL_SECRET_*``), for admin-made tools."""
        self.readiness = Readiness()
        self.settings = settings
        self.secrets = secrets_from_env() if secrets is None else secrets
        self.broker = build_broker(settings, "code-executor", self._reconnected)
        self.sender: Sender | None = None
        self.pool: Pool | None = None
        self.consumer: WorkConsumer | None = None
        self._reaping: asyncio.Task[None] | None = None

    def _reconnected(self) -> None:
        if self.consumer is not None:
            self.consumer.repull()

    async def start(self) -> None:
        metrics.serve(self.settings.metrics_port, self.settings.host, self.readiness)
        client, js = await connect(self.broker, self.settings)
        self.pool = build_pool(self.settings)
        self.sender, policy = sender_for(self.settings, client.max_payload)
        secrets = await open_scope(js, self.settings, self.secrets)
        variables = ConversationVariables(await js.key_value(subjects.CONVERSATIONS_BUCKET))
        runner = CodeRunner(self.pool, Egress(self.sender, policy), secrets, variables)
        marks = await CallMarks.of(client)
        app = ExecutorApp(Publisher(js), runner, marks, "code")
        await listen(client, app)
        await client.subscribe(subjects.SANDBOX_STATUS, cb=self._status)
        await self.broker.start()
        self.consumer = work_consumer(client, DURABLE, app, self.settings, PULL_BATCH)
        await self.consumer.start()
        self.readiness.serving(client)
        self._reaping = asyncio.create_task(self._reap())

    async def _status(self, message: Msg) -> None:
        assert self.pool is not None
        # The account whose python tool is being registered: its jail is started now.
        try:
            asked = json.loads(message.data) if message.data else {}
        except ValueError:
            asked = {}
        account = asked.get("account_id") if isinstance(asked, dict) else None
        reason = await self.pool.available(account if isinstance(account, str) else None)
        answer = {"available": reason is None, "reason": reason}
        await message.respond(json.dumps(answer).encode())

    async def _reap(self) -> None:
        assert self.pool is not None
        while True:
            await asyncio.sleep(max(1.0, self.settings.sandbox_idle_s / 4))
            await self.pool.reap()

    async def stop(self) -> None:
        self.readiness.stopping()
        if self.consumer is not None:
            await self.consumer.stop()
        if self._reaping is not None:
            self._reaping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaping
        await self.broker.stop()
        if self.pool is not None:
            await self.pool.close()
        if self.sender is not None:
            await self.sender.close()


def build_pool(settings: Settings) -> Pool:
    """The jails' pool; without a jail where nsjail or the runtime cannot be found."""
    uids = Uids(settings.sandbox_uid_base if os.geteuid() == 0 else None)
    calls, idle_s = settings.sandbox_calls_per_account, settings.sandbox_idle_s
    try:
        return Pool(Jail.from_settings(settings), uids, calls, idle_s)
    except SandboxUnavailable as exc:
        log.error("python tools cannot run here: %s", exc)
        return Pool(None, uids, calls, idle_s, str(exc))
