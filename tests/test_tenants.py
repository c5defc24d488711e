"""Two customers on one Midcall, each runtime signed in with its account's own credentials.

The fabric runs as ``midcall up`` runs it (embedded nats-server with its users
and accounts, one process per service); accounts ``acme`` and ``globex`` each
have an agent with a ``Lookup`` tool of the same name, a REST key and runtime
credentials. nats-server, not our code alone, keeps them apart.
"""

import asyncio
import contextlib
import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import nats
import nats.errors
import pytest
import pytest_asyncio
from nats.aio.client import Client
from nats.aio.msg import Msg

from services.supervisor import Fabric
from shared.fabric.nats_server import free_port
from shared.security.api_keys import bearer
from shared.settings import Settings
from tests.support.api import RecordingApi
from tests.support.processes import up
from tests.test_billing_service import eventually

pytestmark = pytest.mark.asyncio(loop_scope="module")

ACCOUNTS = ("acme", "globex")
WAIT_S = 15.0
UNKNOWN_AGENT = "There is no agent 'globex-bot' configured for tools."


def lookup_tool(url: str) -> dict[str, Any]:
    return {
        "name": "Lookup",
        "parameters": {"type": "object", "properties": {"order": {"type": "string"}}},
        "request": {"url": url, "method": "POST"},
        "response": {"variables": {"order_total": "$.total"}},
    }


@dataclass
class Listener:
    """A runtime's connection, hearing everything it may hear: ``midcall.conv.>``."""

    nc: Client
    heard: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    errors: list[str] = field(default_factory=list)

    async def on_message(self, msg: Msg) -> None:
        async with self.changed:
            self.heard.append((msg.subject, json.loads(msg.data)))
            self.changed.notify_all()

    async def wait_for(self, subject: str, timeout_s: float = WAIT_S) -> dict[str, Any]:
        async with asyncio.timeout(timeout_s), self.changed:
            await self.changed.wait_for(lambda: any(s == subject for s, _ in self.heard))
        return next(event for s, event in self.heard if s == subject)

    def subjects_heard(self) -> list[str]:
        return [subject for subject, _ in self.heard]

    async def call(self, conversation_id: str, agent: str, **fields: Any) -> str:
        call_id = f"call-{secrets.token_hex(4)}"
        call = {
            "call_id": call_id,
            "conversation_id": conversation_id,
            "agent_id": agent,
            "tool": "Lookup",
            "arguments": {"order": "o-1"},
            **fields,
        }
        js = self.nc.jetstream()
        await js.publish(f"midcall.calls.{conversation_id}", json.dumps(call).encode())
        return call_id

    async def end(self, conversation_id: str) -> None:
        body = json.dumps({"conversation_id": conversation_id}).encode()
        await self.nc.jetstream().publish(f"midcall.conv.{conversation_id}.ended", body)


@dataclass
class Tenants:
    fabric: Fabric
    admin: httpx.AsyncClient
    billing: httpx.AsyncClient
    api: RecordingApi
    keys: dict[str, dict[str, str]]

    async def credentials(self, account: str) -> dict[str, Any]:
        made = await self.admin.post(f"/v1/accounts/{account}/runtime-credentials")
        assert made.status_code == 201, made.text
        return dict(made.json())

    async def runtime(self, account: str) -> tuple[Listener, dict[str, Any]]:
        """A runtime of ``account`` with new credentials, listening, as the README's does."""
        credentials = await self.credentials(account)
        return await self.connect(credentials), credentials

    async def connect(self, credentials: dict[str, Any], **options: Any) -> Listener:
        signed = {
            "user": credentials["user"],
            "password": credentials["password"],
            "inbox_prefix": credentials["inbox_prefix"],
        }
        # A credential is live once nats-server has reloaded its accounts (milliseconds);
        # a connection that arrives while it reloads may be refused or closed.
        async with asyncio.timeout(10):
            while True:
                with contextlib.suppress(nats.errors.Error, TimeoutError, OSError):
                    return await listening(self.fabric.nats_url, **signed, **options)
                await asyncio.sleep(0.05)

    async def shared_runtime(self) -> Listener:
        return await listening(self.fabric.nats_url, **self.fabric.runtime_options())


async def listening(url: str, **options: Any) -> Listener:
    """A runtime's connection, subscribed to everything it may hear, keeping its errors."""
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    nc = await nats.connect(
        url, error_cb=on_error, allow_reconnect=False, connect_timeout=1, **options
    )
    listener = Listener(nc, errors=errors)
    try:
        await nc.subscribe("midcall.conv.>", cb=listener.on_message)
        await nc.flush(timeout=1)
    except BaseException:
        await nc.close()
        raise
    return listener


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def tenants(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Tenants]:
    api = RecordingApi()
    await api.start()
    api.reply("POST", "/acme", json={"who": "acme", "total": 42})
    api.reply("POST", "/globex", json={"who": "globex", "total": 7})
    api.reply("POST", "/slow", json={"who": "slow"}, delay_s=2.0)
    registry, billing = free_port(), free_port()
    settings = Settings(data_dir=tmp_path_factory.mktemp("tenants") / ".midcall")
    fabric = up(settings, registry, billing)
    await fabric.start()
    admin = httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{registry}", headers=bearer(fabric.admin_key)
    )
    keys = {}
    for account in ACCOUNTS:
        assert (await admin.post("/v1/accounts", json={"account_id": account})).status_code == 201
        key = await admin.post(f"/v1/accounts/{account}/keys")
        keys[account] = bearer(key.json()["key"])
        agent = f"{account}-bot"
        made = await admin.put(f"/v1/agents/{agent}", json={"account_id": account})
        assert made.status_code == 200, made.text
        tools = [
            lookup_tool(f"{api.url}/{account}"),
            {**lookup_tool(f"{api.url}/slow"), "name": "Slow"},
        ]
        added = await admin.post(f"/v1/agents/{agent}/tools", json={"tools": tools})
        assert added.status_code == 201, added.text
    yield Tenants(
        fabric,
        admin,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{billing}", headers=bearer(fabric.admin_key)),
        api,
        keys,
    )
    await admin.aclose()
    await fabric.stop()
    await api.stop()


def conversation() -> str:
    return f"conv-{secrets.token_hex(4)}"


# --- hearing and calling ---------------------------------------------------------------


async def test_each_accounts_runtimes_hear_their_own_conversations_only(tenants: Tenants) -> None:
    acme, _ = await tenants.runtime("acme")
    globex, _ = await tenants.runtime("globex")
    shared = await tenants.shared_runtime()
    conv = conversation()  # one conversation id, used by both customers

    await acme.call(conv, "acme-bot")
    acme_result = await acme.wait_for(f"midcall.conv.{conv}.result")
    await globex.call(conv, "globex-bot")
    globex_result = await globex.wait_for(f"midcall.conv.{conv}.result")

    assert acme_result["result"] == {"who": "acme", "total": 42}
    assert globex_result["result"] == {"who": "globex", "total": 7}
    # Each heard its own pending and result, on the public subjects, and nothing else.
    assert acme.subjects_heard() == [f"midcall.conv.{conv}.pending", f"midcall.conv.{conv}.result"]
    assert globex.subjects_heard() == acme.subjects_heard()
    assert [event["call_id"] for _, event in acme.heard] == [acme_result["call_id"]] * 2
    # The shared runtime user hears calls placed through it, not an account's own.
    await shared.nc.flush()
    assert shared.heard == []


async def test_another_accounts_agent_is_unknown_to_a_runtime(tenants: Tenants) -> None:
    acme, _ = await tenants.runtime("acme")
    conv = conversation()
    before = len(tenants.api.received)

    call_id = await acme.call(conv, "globex-bot")
    result = await acme.wait_for(f"midcall.conv.{conv}.result")

    assert result["call_id"] == call_id
    assert result["status"] == "error"
    assert result["error"] == {"code": "unknown_agent", "message": UNKNOWN_AGENT, "details": None}
    assert acme.subjects_heard() == [f"midcall.conv.{conv}.result"]  # no pending
    assert len(tenants.api.received) == before


async def test_a_call_is_its_agents_accounts_whatever_account_it_names(tenants: Tenants) -> None:
    acme, _ = await tenants.runtime("acme")
    before = {a: await usage(tenants, a) for a in ACCOUNTS}
    conv = conversation()

    await acme.call(conv, "acme-bot", account_id="globex")
    await acme.wait_for(f"midcall.conv.{conv}.result")

    async def billed() -> bool | None:
        return (await usage(tenants, "acme"))["calls"] == before["acme"]["calls"] + 1 or None

    await eventually(billed)
    assert (await usage(tenants, "globex"))["calls"] == before["globex"]["calls"]
    # The call's variables are acme's too.
    path = f"/v1/conversations/{conv}/variables"
    as_acme = await tenants.admin.get(path, headers=tenants.keys["acme"])
    as_globex = await tenants.admin.get(path, headers=tenants.keys["globex"])
    assert as_acme.json()["variables"] == {"order_total": 42}
    assert as_globex.json()["variables"] == {}


async def usage(tenants: Tenants, account: str) -> dict[str, Any]:
    response = await tenants.billing.get("/v1/usage", params={"account_id": account})
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_one_conversation_id_is_two_conversations_for_two_accounts(tenants: Tenants) -> None:
    acme, _ = await tenants.runtime("acme")
    globex, _ = await tenants.runtime("globex")
    conv = conversation()

    await acme.call(conv, "acme-bot")
    await acme.wait_for(f"midcall.conv.{conv}.result")
    await globex.call(conv, "globex-bot")
    await globex.wait_for(f"midcall.conv.{conv}.result")

    path = f"/v1/conversations/{conv}/variables"
    for account, total in (("acme", 42), ("globex", 7)):
        own = await tenants.admin.get(path, headers=tenants.keys[account])
        by_admin = await tenants.admin.get(path, params={"account_id": account})
        assert own.json() == {"conversation_id": conv, "variables": {"order_total": total}}
        assert by_admin.json() == own.json()
    # An account key naming another account reads nothing.
    asked = await tenants.admin.get(
        path, params={"account_id": "acme"}, headers=tenants.keys["globex"]
    )
    assert asked.json()["variables"] == {}


async def test_a_runtime_cannot_end_another_accounts_conversation(tenants: Tenants) -> None:
    acme, _ = await tenants.runtime("acme")
    globex, _ = await tenants.runtime("globex")
    conv = conversation()
    slow = {"tool": "Slow"}

    await globex.call(conv, "globex-bot", **slow)
    await globex.wait_for(f"midcall.conv.{conv}.pending")
    await acme.end(conv)  # acme's conversation of that id, not globex's
    kept = await globex.wait_for(f"midcall.conv.{conv}.result")
    await globex.call(conv, "globex-bot", **slow)

    assert kept["status"] == "success"
    assert [s for s in acme.subjects_heard()] == [f"midcall.conv.{conv}.ended"]
    # globex's own end cancels its call in flight.
    async with globex.changed:
        await globex.changed.wait_for(lambda: len(globex.heard) >= 3)
    await globex.end(conv)

    async def cancelled() -> bool | None:
        codes = [e["error"]["code"] for _, e in globex.heard if e.get("error")]
        return "cancelled" in codes or None

    await eventually(cancelled)


async def test_reply_subject_tricks_stay_in_the_runtimes_own_account(tenants: Tenants) -> None:
    acme, _ = await tenants.runtime("acme")
    globex, _ = await tenants.runtime("globex")
    conv = conversation()
    call = {"call_id": "trick", "conversation_id": conv, "agent_id": "acme-bot", "tool": "Lookup"}

    # The PubAck of this call is sent to the reply subject acme named.
    await acme.nc.publish(
        f"midcall.calls.{conv}", json.dumps(call).encode(), reply=f"midcall.conv.{conv}.result"
    )
    await acme.wait_for(f"midcall.conv.{conv}.pending")
    results = [e for s, e in acme.heard if s == f"midcall.conv.{conv}.result"]
    async with asyncio.timeout(WAIT_S), acme.changed:
        await acme.changed.wait_for(
            lambda: len([s for s, _ in acme.heard if s.endswith(".result")]) >= 2
        )
    await globex.nc.flush()

    results = [e for s, e in acme.heard if s == f"midcall.conv.{conv}.result"]
    pub_ack = next(event for event in results if "seq" in event)  # in acme's own account
    assert pub_ack["stream"] == "MIDCALL_CALLS"
    assert globex.heard == []


async def test_a_runtime_reaches_nothing_beyond_its_accounts_subjects(tenants: Tenants) -> None:
    acme, _ = await tenants.runtime("acme")
    shared = await tenants.shared_runtime()
    before = len(tenants.api.received)

    # Another account's mapped subject, the fabric's internals, a KV bucket: all refused.
    for runtime in (acme, shared):
        for subject in (
            "midcall.calls.globex.conv-x",
            "midcall.exec.conv-x",
            "$KV.midcall_conversations.globex/conv-x",
        ):
            await runtime.nc.publish(subject, b"{}")
        await runtime.nc.flush()
        await asyncio.sleep(0)  # errors arrive on the reader task

    refused = [
        'nats: permissions violation for publish to "midcall.calls.globex.conv-x"',
        'nats: permissions violation for publish to "midcall.exec.conv-x"',
        'nats: permissions violation for publish to "$kv.midcall_conversations.globex/conv-x"',
    ]

    async def violations() -> bool | None:
        return [acme.errors, shared.errors] == [refused, refused] or None

    await eventually(violations)
    assert len(tenants.api.received) == before


# --- the credentials themselves -----------------------------------------------------------


async def test_credentials_are_shown_once_and_only_to_their_account(tenants: Tenants) -> None:
    made = await tenants.admin.post(
        "/v1/accounts/acme/runtime-credentials", headers=tenants.keys["acme"]
    )
    listed = await tenants.admin.get(
        "/v1/accounts/acme/runtime-credentials", headers=tenants.keys["acme"]
    )
    by_globex = await tenants.admin.get(
        "/v1/accounts/acme/runtime-credentials", headers=tenants.keys["globex"]
    )
    revoke_by_globex = await tenants.admin.delete(
        f"/v1/accounts/acme/runtime-credentials/{made.json()['credential_id']}",
        headers=tenants.keys["globex"],
    )

    assert made.status_code == 201
    credential = made.json()
    assert set(credential) == {
        "credential_id",
        "account_id",
        "user",
        "inbox_prefix",
        "created_at",
        "revoked_at",
        "password",
    }
    assert credential["user"] == f"runtime-{credential['credential_id']}"
    assert credential["inbox_prefix"] == f"_INBOX_runtime-{credential['credential_id']}"
    shown = [
        c
        for c in listed.json()["runtime_credentials"]
        if c["credential_id"] == credential["credential_id"]
    ]
    assert shown == [{k: v for k, v in credential.items() if k != "password"}]
    assert "password" not in listed.text
    assert credential["password"] not in listed.text
    assert (by_globex.status_code, revoke_by_globex.status_code) == (404, 404)


async def test_a_revoked_credential_stops_working_within_seconds_even_connected(
    tenants: Tenants,
) -> None:
    first, second = await tenants.credentials("acme"), await tenants.credentials("acme")
    closed = asyncio.Event()

    async def on_closed() -> None:
        closed.set()

    await tenants.connect(first, closed_cb=on_closed)
    new = await tenants.connect(second)

    revoked = await tenants.admin.delete(
        f"/v1/accounts/acme/runtime-credentials/{first['credential_id']}"
    )
    await asyncio.wait_for(closed.wait(), 10)

    assert revoked.status_code == 204
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await nats.connect(
            tenants.fabric.nats_url,
            user=first["user"],
            password=first["password"],
            allow_reconnect=False,
            # The reload that revoked it checks every connected client's password again
            # (a bcrypt compare each; a valid connect takes 0.17 s here): a connection made
            # meanwhile waits, 2 s with this module's runtimes connected on two cores.
            connect_timeout=10,
        )
    # Rotation: the account's other credential goes on working.
    conv = conversation()
    await new.call(conv, "acme-bot")
    assert (await new.wait_for(f"midcall.conv.{conv}.result"))["status"] == "success"
    listed = await tenants.admin.get("/v1/accounts/acme/runtime-credentials")
    states = {c["credential_id"]: c["revoked_at"] for c in listed.json()["runtime_credentials"]}
    assert states[first["credential_id"]] is not None
    assert states[second["credential_id"]] is None
