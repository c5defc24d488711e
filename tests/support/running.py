"""The fabric as ``midcall up`` runs it, with the orders API its tools call, for the SDK's
and the adapters' tests: one module-scoped fabric per test module."""

import asyncio
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import nats
import pytest
from aiohttp import web

from midcall.client import Credentials, MidcallClient
from services.supervisor import Fabric
from shared.contract import subjects
from shared.contract.events import ToolCallProgress
from shared.fabric.nats_server import free_port
from shared.security.api_keys import bearer
from shared.security.nats_auth import Role, connect_options
from shared.settings import Settings
from tests.support.api import RecordingApi
from tests.support.processes import up


def lookup_tool(url: str, name: str = "Lookup") -> dict[str, Any]:
    return {
        "name": name,
        "description": "Looks an order up.",
        "parameters": {
            "type": "object",
            "properties": {"order": {"type": "string"}},
            "required": ["order"],
        },
        "request": {"url": url, "method": "POST"},
        "speech": {"on_send": "Let me look that up."},
    }


def conversation() -> str:
    return f"conv-{secrets.token_hex(4)}"


def agent_tools(api_url: str) -> list[dict[str, Any]]:
    """An adapter's agent's tools on the orders API: a lookup bound to the caller's number,
    a tool's message for the agent (no filler), a failure, and a call that never ends."""
    return [
        {
            **lookup_tool(f"{api_url}/lookup"),
            "context_parameters": [{"name": "From", "description": "The caller's number."}],
        },
        {**lookup_tool(f"{api_url}/track", "Track"), "speech": {"on_send": False}},
        lookup_tool(f"{api_url}/broken", "Broken"),
        lookup_tool(f"{api_url}/slow", "Slow"),
    ]


async def orders_api() -> RecordingApi:
    """The orders API the tools call: a lookup, a tool's message for the agent, a failure,
    and a call that outlasts every test (it is cancelled)."""
    api = RecordingApi()
    await api.start()
    api.reply("POST", "/lookup", json={"order": "o-1", "total": 42})
    api.reply("POST", "/track", json={"agent_message": "Order o-1 left the warehouse today."})
    api.reply("POST", "/broken", status=500, json={"error": "down"})
    api.reply("POST", "/slow", json={}, delay_s=60)
    return api


BOOKED = {"booked": True}


def reports(call_id: str, conversation_id: str) -> tuple[ToolCallProgress, ToolCallProgress]:
    """What a long booking's API reports: how far along (not to be said), then news to say."""
    return (
        ToolCallProgress(
            call_id=call_id,
            conversation_id=conversation_id,
            message="Searching the diary.",
            percent=20,
        ),
        ToolCallProgress(
            call_id=call_id,
            conversation_id=conversation_id,
            message="Found a slot at ten.",
            speak=True,
        ),
    )


@dataclass
class Running:
    fabric: Fabric
    api: RecordingApi
    credentials: Credentials  # the shared runtime user's

    @property
    def registry_url(self) -> str:
        return f"http://127.0.0.1:{self.fabric.extra_env['MIDCALL_REGISTRY_PORT']}"

    def admin(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.registry_url, headers=bearer(self.fabric.admin_key))

    def client(self) -> MidcallClient:
        """The shared runtime user's client, reading tools as the admin; the registry's
        changes reach it within 50 ms."""
        return MidcallClient(
            self.fabric.nats_url,
            self.credentials,
            registry_url=self.registry_url,
            api_key=self.fabric.admin_key,
            tools_refresh_s=0.05,
        )

    async def add_tools(self, agent: str, *tools: dict[str, Any], account: str = "") -> None:
        """``tools`` for ``agent``, made first an agent of ``account`` when one is named."""
        async with self.admin() as admin:
            if account:
                made = await admin.put(f"/v1/agents/{agent}", json={"account_id": account})
                assert made.status_code == 200, made.text
            added = await admin.post(f"/v1/agents/{agent}/tools", json={"tools": list(tools)})
        assert added.status_code == 201, added.text

    async def held_agent(self, account: str = "") -> tuple[str, asyncio.Event]:
        """A new agent (of ``account`` when named) whose one tool, ``Book``, runs until the
        event is set, then answers ``BOOKED``: a call the test lets finish. Its id, and
        the event."""
        path = f"/held-{secrets.token_hex(4)}"
        release = asyncio.Event()

        async def handler(_: web.Request) -> web.StreamResponse:
            await release.wait()
            return web.json_response(BOOKED)

        self.api.route("POST", path, handler)
        agent = f"held-{secrets.token_hex(4)}"
        await self.add_tools(agent, lookup_tool(f"{self.api.url}{path}", "Book"), account=account)
        return agent, release

    async def add_account(self, account: str) -> None:
        async with self.admin() as admin:
            made = await admin.post("/v1/accounts", json={"account_id": account})
        assert made.status_code == 201, made.text

    async def account_credentials(self, account: str) -> Credentials:
        async with self.admin() as admin:
            made = await admin.post(f"/v1/accounts/{account}/runtime-credentials")
        assert made.status_code == 201, made.text
        return Credentials.of_account(made.json())

    async def account_key(self, account: str) -> str:
        async with self.admin() as admin:
            made = await admin.post(f"/v1/accounts/{account}/keys")
        assert made.status_code == 201, made.text
        return str(made.json()["key"])

    async def publish_progress(
        self, *updates: ToolCallProgress, runtime_account: str | None = None
    ) -> None:
        """In this order, through the registry's NATS user, as its progress endpoint does
        (without the endpoint: the tests need no tool that answers 202)."""
        password = self.fabric.credentials[Role.REGISTRY]
        nc = await nats.connect(self.fabric.nats_url, **connect_options(Role.REGISTRY, password))
        try:
            for update in updates:
                subject = subjects.progress(update.conversation_id, runtime_account)
                await nc.jetstream().publish(subject, update.model_dump_json().encode())
        finally:
            await nc.close()


@asynccontextmanager
async def fabric_up(tmp_path_factory: pytest.TempPathFactory, name: str) -> AsyncIterator[Running]:
    """``midcall up`` in a data directory of its own, with the orders API on loopback."""
    api = await orders_api()
    settings = Settings(data_dir=tmp_path_factory.mktemp(name) / ".midcall")
    fabric = up(settings, free_port())
    try:
        await fabric.start()
        yield Running(fabric, api, Credentials.from_data_dir(settings.data_dir))
    finally:
        await fabric.stop()
        await api.stop()
