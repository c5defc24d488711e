"""Composition root of the HTTP executor."""

from services.http_executor.app import ExecutorApp, register
from services.http_executor.client import Sender, build_client
from services.http_executor.destinations import DestinationPolicy
from services.http_executor.execute import Executor
from shared.broker import build_broker, connect
from shared.settings import Settings, secrets_from_env


class HttpExecutorService:
    name = "http-executor"

    def __init__(self, settings: Settings, secrets: dict[str, str] | None = None) -> None:
        self.settings = settings
        self.secrets = secrets_from_env() if secrets is None else secrets
        self.broker = build_broker(settings.nats_servers(), "http-executor")
        self.sender: Sender | None = None

    async def start(self) -> None:
        await connect(self.broker)
        nats_limit = self.broker.config.connection_state.connection.max_payload
        # A response must fit in one NATS message with its envelope.
        cap = min(self.settings.max_response_bytes, nats_limit - 64 * 1024)
        policy = DestinationPolicy(self.settings.allow_destinations)
        self.sender = Sender(build_client(self.settings.max_connections, policy), cap)
        executor = Executor(self.sender, policy, self.secrets)
        register(
            self.broker, ExecutorApp(self.broker, executor), self.settings.executor_concurrency
        )
        await self.broker.start()

    async def stop(self) -> None:
        await self.broker.stop()
        if self.sender is not None:
            await self.sender.close()
