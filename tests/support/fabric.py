"""The whole fabric in the test's own process: every service, really started, on real NATS.

Services are built by their composition roots with the test's settings; they
talk only over the nats-server the test started, exactly as in production.
"""

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import nats
from nats.aio.client import Client

from services.billing.main import BillingService
from services.code_executor.main import CodeExecutorService
from services.demo.runtime import Runtime
from services.dispatcher.main import DispatcherService
from services.http_executor.main import HttpExecutorService
from services.registry.main import RegistryService
from services.result_injector.main import ResultInjectorService
from shared.contract import subjects
from shared.process.service import Runnable
from shared.security.api_keys import bearer
from shared.settings import Settings, servers
from tests.support.keys import ADMIN_KEY, AS_ADMIN

# The platform's secrets (MIDCALL_SECRET_<NAME>): only tools the admin registers use them.
SECRETS = {
    "BOOKING_KEY": "s3cr3t-booking-key",
    "HOOK_OLD": "whsec_b2xkLXNlY3JldC1vbGQtc2VjcmV0LW9sZA==",
    "HOOK_NEW": "whsec_bmV3LXNlY3JldC1uZXctc2VjcmV0LW5ldw==",
}
DURABLES = {
    subjects.CALLS_STREAM: ["midcall-dispatcher"],
    subjects.WORK_STREAM: ["midcall-http-executor", "midcall-result-injector"],
    subjects.USAGE_STREAM: ["midcall-billing-usage"],
}


@dataclass
class Fabric:
    settings: Settings
    runtime: Runtime
    registry: httpx.AsyncClient
    billing: httpx.AsyncClient
    nc: Client
    services: list[Runnable] = field(default_factory=list)

    async def register(self, agent_id: str, *tools: dict[str, Any]) -> None:
        response = await self.registry.post(
            f"/v1/agents/{agent_id}/tools", json={"tools": list(tools)}
        )
        assert response.status_code == 201, response.text

    async def register_document(self, agent_id: str, dialect: str, document: str) -> Any:
        """POST a tool document in a platform's dialect, as a migrating team would."""
        response = await self.registry.post(
            f"/v1/agents/{agent_id}/tools",
            params={"dialect": dialect},
            content=document,
            headers={"Content-Type": "application/xml" if dialect == "xml" else "application/json"},
        )
        assert response.status_code == 201, response.text
        return response.json()["tools"]

    async def account(self, account_id: str) -> dict[str, str]:
        """A new account and a key for it: the headers to call the REST APIs as it."""
        made = await self.registry.post("/v1/accounts", json={"account_id": account_id})
        assert made.status_code == 201, made.text
        key = await self.registry.post(f"/v1/accounts/{account_id}/keys")
        assert key.status_code == 201, key.text
        return bearer(key.json()["key"])

    async def set_secret(
        self, account_id: str, name: str, value: str, headers: dict[str, str] | None = None
    ) -> None:
        response = await self.registry.put(
            f"/v1/accounts/{account_id}/secrets/{name}", json={"value": value}, headers=headers
        )
        assert response.status_code == 200, response.text

    async def drained(self, timeout_s: float = 10.0) -> None:
        """Wait until every service has finished (acked) everything published so far."""
        js = self.nc.jetstream()
        async with asyncio.timeout(timeout_s):
            for stream, durables in DURABLES.items():
                for durable in durables:
                    while True:
                        info = await js.consumer_info(stream, durable)
                        if not info.num_pending and not info.num_ack_pending:
                            break
                        await asyncio.sleep(0.01)


async def start_fabric(
    nats_url: str,
    data_dir: Path,
    database_url: str,
    allow_destinations: str = "127.0.0.1",
    stream_replicas: int = 1,
) -> Fabric:
    """``allow_destinations``: the loopback API the tests run is allowed by default;
    ``nats_url`` may list a cluster's nodes, whose streams then have ``stream_replicas``."""
    settings = Settings(
        nats_url=nats_url,
        stream_replicas=stream_replicas,
        data_dir=data_dir,
        database_url=database_url,
        registry_port=0,
        billing_port=0,
        allow_destinations=allow_destinations,
        admin_key=ADMIN_KEY,
        # The services share the test runner's process, whose memory grows over a whole
        # suite: past the default budget they would stop taking work.
        memory_budget_mb=64 * 1024,
    )
    registry = RegistryService(settings)
    await registry.start()
    # Where tools' APIs report back (Midcall-Callback-Url): the port the registry got.
    settings = settings.model_copy(update={"public_url": f"http://127.0.0.1:{registry.port}"})
    billing = BillingService(settings)
    services: list[Runnable] = [
        registry,
        DispatcherService(settings),
        HttpExecutorService(settings, secrets=SECRETS),
        CodeExecutorService(settings, secrets=SECRETS),
        ResultInjectorService(settings),
        billing,
    ]
    for service in services[1:]:
        await service.start()
    return Fabric(
        settings=settings,
        runtime=await Runtime.connect(nats_url),
        registry=httpx.AsyncClient(base_url=f"http://127.0.0.1:{registry.port}", headers=AS_ADMIN),
        billing=httpx.AsyncClient(base_url=f"http://127.0.0.1:{billing.port}", headers=AS_ADMIN),
        nc=await nats.connect(servers(nats_url)),
        services=services,
    )


async def stop_fabric(fabric: Fabric) -> None:
    await fabric.runtime.close()
    await fabric.registry.aclose()
    await fabric.billing.aclose()
    await fabric.nc.close()
    for service in reversed(fabric.services):
        await service.stop()
