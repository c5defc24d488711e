"""The Python SDK against the fabric as ``midcall up`` runs it: real users, accounts and streams.

A runtime using ``MidcallClient`` hears the pending and exactly one result of
each call it places, gets each error code as its own exception with the
message to say, re-issues a call by its id without running it twice, keeps
its calls through a nats-server restart, and with an account's runtime
credentials reaches that account's agents only.
"""

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import pytest_asyncio
from aiohttp import web

from midcall.client import (
    Call,
    CallFailed,
    Cancelled,
    Credentials,
    InvalidArguments,
    MidcallClient,
    ToolsUnavailable,
    UnknownAgent,
    UnknownTool,
)
from midcall.client.errors import BY_CODE
from services.supervisor import Fabric
from shared.contract.errors import ErrorCode
from shared.contract.events import ToolCallPending
from shared.fabric.nats_server import free_port
from shared.security.api_keys import bearer
from shared.settings import Settings
from tests.support.api import RecordingApi
from tests.support.processes import up
from tests.test_runtime_accounts import live

pytestmark = pytest.mark.asyncio(loop_scope="module")
AGENT = "salon-bot"
WAIT_S = 15.0


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


async def orders_api() -> RecordingApi:
    """The orders API the adapters' tools call: a lookup, a tool's message for the agent,
    a failure, and a call that outlasts every test (it is cancelled)."""
    api = RecordingApi()
    await api.start()
    api.reply("POST", "/lookup", json={"order": "o-1", "total": 42})
    api.reply("POST", "/track", json={"agent_message": "Order o-1 left the warehouse today."})
    api.reply("POST", "/broken", status=500, json={"error": "down"})
    api.reply("POST", "/slow", json={}, delay_s=60)
    return api


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


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def running(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Running]:
    api = RecordingApi()
    await api.start()
    api.reply("POST", "/lookup", json={"order": "o-1", "total": 42})
    registry = free_port()
    settings = Settings(data_dir=tmp_path_factory.mktemp("sdk") / ".midcall")
    fabric = up(settings, registry)
    await fabric.start()
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{registry}", headers=bearer(fabric.admin_key)
    ) as admin:
        tools = [
            lookup_tool(f"{api.url}/lookup"),
            lookup_tool(f"{api.url}/slow", "Slow"),
            lookup_tool(f"{api.url}/counted", "Counted"),
        ]
        added = await admin.post(f"/v1/agents/{AGENT}/tools", json={"tools": tools})
        assert added.status_code == 201, added.text
        assert (await admin.post("/v1/accounts", json={"account_id": "acme"})).status_code == 201
        made = await admin.put("/v1/agents/acme-bot", json={"account_id": "acme"})
        assert made.status_code == 200, made.text
        acme_tools = [lookup_tool(f"{api.url}/lookup")]
        added = await admin.post("/v1/agents/acme-bot/tools", json={"tools": acme_tools})
        assert added.status_code == 201, added.text
        made = await admin.put("/v1/agents/acme-desk", json={"account_id": "acme"})
        assert made.status_code == 200, made.text
        desk = {"tools": [lookup_tool(f"{api.url}/slow", "Slow")]}
        added = await admin.post("/v1/agents/acme-desk/tools", json=desk)
        assert added.status_code == 201, added.text
    yield Running(fabric, api, Credentials.from_data_dir(settings.data_dir))
    await fabric.stop()
    await api.stop()


def conversation() -> str:
    return f"conv-{secrets.token_hex(4)}"


async def test_a_call_hears_its_pending_then_exactly_one_result(running: Running) -> None:
    async with MidcallClient(running.fabric.nats_url, running.credentials) as mc:
        call = await mc.call(AGENT, conversation(), "Lookup", {"order": "o-1"})
        async with asyncio.timeout(WAIT_S):
            pending = await call.pending()
            result = await call.result()

    assert isinstance(call, Call)
    assert pending == ToolCallPending(
        call_id=call.call_id,
        conversation_id=call.conversation_id,
        tool="Lookup",
        speak=True,
        speech="Let me look that up.",
        at=pending.at,
    )
    assert (result.call_id, result.status, result.result) == (
        call.call_id,
        "success",
        {"order": "o-1", "total": 42},
    )
    assert (result.http_status, result.attempts) == (200, 1)


@pytest.mark.parametrize(
    ("tool", "arguments", "error", "message"),
    [
        pytest.param(
            "Nope",
            {},
            UnknownTool,
            "The tool 'Nope' does not exist for this agent.",
            id="unknown-tool",
        ),
        pytest.param(
            "Lookup",
            {"order": 7},
            InvalidArguments,
            None,
            id="invalid-arguments",
        ),
    ],
)
async def test_a_refused_call_raises_its_codes_error_from_pending_and_result(
    running: Running,
    tool: str,
    arguments: dict[str, Any],
    error: type[CallFailed],
    message: str | None,
) -> None:
    async with MidcallClient(running.fabric.nats_url, running.credentials) as mc:
        call = await mc.call(AGENT, conversation(), tool, arguments)
        async with asyncio.timeout(WAIT_S):
            with pytest.raises(error) as from_pending:
                await call.pending()
            with pytest.raises(error) as from_result:
                await call.result()

    assert from_pending.value.code == from_result.value.code == error.code
    assert from_result.value.result.call_id == call.call_id
    assert from_result.value.message == str(from_result.value)
    if message is not None:
        assert from_result.value.message == message


async def test_every_error_code_has_an_exception_of_its_own() -> None:
    assert set(BY_CODE) == set(ErrorCode)
    assert len(set(BY_CODE.values())) == len(ErrorCode)


async def test_a_reissued_call_id_runs_once_and_a_new_process_hears_its_result(
    running: Running,
) -> None:
    before = len([r for r in running.api.received if r.path == "/counted"])
    running.api.reply("POST", "/counted", json={"counted": True})
    conv, call_id = conversation(), f"call-{secrets.token_hex(4)}"

    async with MidcallClient(running.fabric.nats_url, running.credentials) as first:
        call = await first.call(AGENT, conv, "Counted", {"order": "o-1"}, call_id=call_id)
        again = await first.call(AGENT, conv, "Counted", {"order": "o-1"}, call_id=call_id)
        async with asyncio.timeout(WAIT_S):
            result = await call.result()
    # A process that restarted re-issues the call it had placed: the fabric does not run
    # it again, and the result it already gave reaches the new process.
    async with MidcallClient(running.fabric.nats_url, running.credentials) as restarted:
        reissued = await restarted.call(AGENT, conv, "Counted", {"order": "o-1"}, call_id=call_id)
        async with asyncio.timeout(WAIT_S):
            heard = await reissued.result()

    assert again is call
    assert heard == result
    assert len([r for r in running.api.received if r.path == "/counted"]) == before + 1


async def test_a_call_in_flight_through_a_nats_server_restart_gets_one_result(
    running: Running,
) -> None:
    arrived, release = asyncio.Event(), asyncio.Event()

    async def slow(_: web.Request) -> web.StreamResponse:
        arrived.set()
        await release.wait()
        return web.json_response({"order": "o-1", "slow": True})

    running.api.route("POST", "/slow", slow)
    async with MidcallClient(running.fabric.nats_url, running.credentials) as mc:
        call = await mc.call(AGENT, conversation(), "Slow", {"order": "o-1"}, deadline=30)
        async with asyncio.timeout(WAIT_S):
            await call.pending()
            await arrived.wait()
        await running.fabric.restart_nats(down_s=0.5)
        release.set()
        async with asyncio.timeout(30):
            result = await call.result()

    assert (result.status, result.result) == ("success", {"order": "o-1", "slow": True})


async def test_ending_the_conversation_cancels_its_call(running: Running) -> None:
    never = asyncio.Event()

    async def hangs(_: web.Request) -> web.StreamResponse:
        await never.wait()
        return web.json_response({})

    running.api.route("POST", "/slow", hangs)
    conv = conversation()
    async with MidcallClient(running.fabric.nats_url, running.credentials) as mc:
        call = await mc.call(AGENT, conv, "Slow", {"order": "o-1"}, deadline=30)
        async with asyncio.timeout(WAIT_S):
            await call.pending()
            await mc.end(conv)
            with pytest.raises(Cancelled) as cancelled:
                await call.result()

    assert cancelled.value.message == "The conversation ended before the action finished."


async def test_an_accounts_credentials_reach_its_own_agents_only(running: Running) -> None:
    acme = await running.account_credentials("acme")
    await live(running.fabric.nats_url, acme.connect_options())

    async with MidcallClient(running.fabric.nats_url, acme) as mc:
        ours = await mc.call("acme-bot", conversation(), "Lookup", {"order": "o-1"})
        theirs = await mc.call(AGENT, conversation(), "Lookup", {"order": "o-1"})
        async with asyncio.timeout(WAIT_S):
            result = await ours.result()
            with pytest.raises(UnknownAgent):
                await theirs.result()

    assert result.result == {"order": "o-1", "total": 42}


async def test_an_agents_tools_come_in_each_providers_shape_and_follow_the_registry(
    running: Running,
) -> None:
    key = await running.account_key("acme")
    changes: asyncio.Queue[list[str]] = asyncio.Queue()
    async with MidcallClient(
        running.fabric.nats_url,
        await running.account_credentials("acme"),
        registry_url=running.registry_url,
        api_key=key,
        tools_refresh_s=0.05,
    ) as mc:
        tools = await mc.tools("acme-bot")
        tools.on_change(lambda changed: changes.put_nowait(changed.names))
        first = (tools.names, tools.openai, tools.anthropic, tools.gemini)
        async with running.admin() as admin:
            added = await admin.post(
                "/v1/agents/acme-bot/tools", json=lookup_tool(f"{running.api.url}/x", "Track")
            )
            assert added.status_code == 201, added.text
        async with asyncio.timeout(WAIT_S):
            changed = await changes.get()
        with pytest.raises(ToolsUnavailable) as theirs:
            await mc.tools(AGENT)
        again = await mc.tools("acme-bot")

    parameters = {
        "type": "object",
        "properties": {"order": {"type": "string"}},
        "required": ["order"],
    }
    assert first == (
        ["Lookup"],
        [
            {
                "type": "function",
                "function": {
                    "name": "Lookup",
                    "description": "Looks an order up.",
                    "parameters": parameters,
                },
            }
        ],
        [{"name": "Lookup", "description": "Looks an order up.", "input_schema": parameters}],
        [
            {
                "functionDeclarations": [
                    {
                        "name": "Lookup",
                        "description": "Looks an order up.",
                        "parameters": {**parameters, "type": "object"},
                    }
                ]
            }
        ],
    )
    assert changed == ["Lookup", "Track"]
    assert again is tools
    assert changes.empty()  # one change, heard once: the 304s in between are not changes
    assert theirs.value.status == 404


@pytest.mark.parametrize("signed_in_as", ["runtime", "account"])
async def test_a_runtime_cancels_its_call(running: Running, signed_in_as: str) -> None:
    never = asyncio.Event()

    async def hangs(_: web.Request) -> web.StreamResponse:
        await never.wait()
        return web.json_response({})

    running.api.route("POST", "/slow", hangs)
    credentials, agent = running.credentials, AGENT
    if signed_in_as == "account":
        credentials, agent = await running.account_credentials("acme"), "acme-desk"
        await live(running.fabric.nats_url, credentials.connect_options())
    async with MidcallClient(running.fabric.nats_url, credentials) as mc:
        call = await mc.call(agent, conversation(), "Slow", {"order": "o-1"}, deadline=30)
        async with asyncio.timeout(WAIT_S):
            await call.pending()
            await call.cancel("the caller hung up")
            with pytest.raises(Cancelled) as cancelled:
                await call.result()

    assert cancelled.value.message == "The Slow action was cancelled before it finished."
    assert cancelled.value.details == {"reason": "the caller hung up"}
