"""Account secrets end to end: set over REST, used by the account's tools only, shown nowhere.

The fabric runs in-process on a real nats-server; its executor holds the
platform's secrets (``SECRETS``, as ``MIDCALL_SECRET_<NAME>`` would), which
only tools registered with the admin key may use. Accounts ``acme`` and
``globex`` each have a key; ``acme-bot`` is acme's agent.
"""

import asyncio
import json
import logging
import secrets
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from nats.aio.msg import Msg
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from yarl import URL

from shared.contract import subjects
from tests.support.api import RecordingApi
from tests.support.fabric import SECRETS, Fabric
from tests.support.keys import AS_ADMIN, Keys
from tests.test_dialects_end_to_end import VOCODE_SECRET, example, vocode_receiver
from tests.test_spine import new_call, place

AGENT = "acme-bot"
VALUE = "acme-token-7f3a-never-shown"
NOT_SET_UP = (
    "The Notify tool is not set up completely, so it cannot be used right now. "
    "Apologize and offer another way to help."
)


def notify(url: str, secret: str = "ACME_TOKEN", **request: Any) -> dict[str, Any]:
    """A tool that sends ``{{secrets.<secret>}}`` as its bearer token."""
    headers = {"Authorization": f"Bearer {{{{secrets.{secret}}}}}"}
    return {"name": "Notify", "request": {"url": url, "headers": headers, **request}}


async def post_tools(fabric: Fabric, headers: dict[str, str], *tools: Any) -> httpx.Response:
    return await fabric.registry.post(
        f"/v1/agents/{AGENT}/tools", json={"tools": list(tools)}, headers=headers
    )


async def post_vocode(fabric: Fabric, api: RecordingApi, headers: dict[str, str]) -> httpx.Response:
    """Vocode's meeting-booking action, with its literal signature_secret, sent to ``api``."""
    document = example("vocode_meeting_booking.json", **{"http://example.com": api.url})
    return await fabric.registry.post(
        f"/v1/agents/{AGENT}/tools", params={"dialect": "vocode"}, content=document, headers=headers
    )


async def call(fabric: Fabric, tool: str = "Notify", **fields: Any) -> dict[str, Any]:
    return await place(fabric, new_call(tool=tool, agent_id=AGENT, **fields))


# --- set over REST, used in the request, never shown -----------------------------------------


async def test_a_secret_set_over_rest_is_sent_to_the_api_and_never_shown(
    fabric: Fabric, api: RecordingApi, keys: Keys
) -> None:
    api.reply("POST", "/notify", json={"ok": True})
    path = "/v1/accounts/acme/secrets/ACME_TOKEN"

    put = await fabric.registry.put(path, json={"value": VALUE}, headers=keys.acme)
    listed = await fabric.registry.get("/v1/accounts/acme/secrets", headers=keys.acme)
    added = await post_tools(fabric, keys.acme, notify(f"{api.url}/notify"))
    result = await call(fabric)

    assert (put.status_code, set(put.json())) == (200, {"name", "updated_at"})
    assert listed.status_code == 200
    assert [set(s) for s in listed.json()["secrets"]] == [{"name", "updated_at"}]
    assert [s["name"] for s in listed.json()["secrets"]] == ["ACME_TOKEN"]
    assert added.status_code == 201, added.text
    assert result["status"] == "success", result["error"]
    assert api.received[-1].header("Authorization") == f"Bearer {VALUE}"
    for response in (put, listed, added):
        assert VALUE not in response.text


async def test_a_changed_secret_is_used_within_seconds(
    fabric: Fabric, api: RecordingApi, keys: Keys
) -> None:
    api.reply("POST", "/notify", json={"ok": True})
    await fabric.set_secret("acme", "ACME_TOKEN", "first", headers=keys.acme)
    assert (await post_tools(fabric, keys.acme, notify(f"{api.url}/notify"))).status_code == 201
    await call(fabric)

    await fabric.set_secret("acme", "ACME_TOKEN", "second", headers=keys.acme)
    await asyncio.sleep(2.1)  # an executor uses a secret it opened for 2 s
    await call(fabric)

    assert [r.header("Authorization") for r in api.received] == ["Bearer first", "Bearer second"]


@pytest.mark.parametrize(
    ("name", "body"),
    [("9LIVES", {"value": "v"}), ("has-dash", {"value": "v"}), ("OK", {"value": ""}), ("OK", {})],
    ids=["leading-digit", "dash", "empty", "no-value"],
)
async def test_a_bad_name_or_value_is_a_422(
    fabric: Fabric, keys: Keys, name: str, body: dict[str, Any]
) -> None:
    response = await fabric.registry.put(
        f"/v1/accounts/acme/secrets/{name}", json=body, headers=keys.acme
    )

    assert (response.status_code, response.json()["error"]["code"]) == (422, "invalid_request")


async def test_the_admin_manages_the_default_accounts_secrets_accounts_cannot(
    fabric: Fabric, keys: Keys
) -> None:
    path = "/v1/accounts/default/secrets/HOOK"

    as_admin = await fabric.registry.put(path, json={"value": "v"})
    as_acme = await fabric.registry.put(path, json={"value": "v"}, headers=keys.acme)

    assert (as_admin.status_code, as_acme.status_code) == (200, 404)


# --- only the tool's own account's secrets -----------------------------------------------------


async def test_another_accounts_secret_is_refused_at_registration_and_at_execution(
    fabric: Fabric, api: RecordingApi, keys: Keys
) -> None:
    api.reply("POST", "/notify", json={"ok": True})
    await fabric.set_secret("globex", "GLOBEX_TOKEN", "globex-value", headers=keys.globex)
    tool = notify(f"{api.url}/notify", secret="GLOBEX_TOKEN")

    refused = await post_tools(fabric, keys.acme, tool)
    # The admin may register it (only executors know the platform's names) ...
    assert (await post_tools(fabric, AS_ADMIN, tool)).status_code == 201
    # ... yet acme's tool never gets globex's secret, whichever account the call names.
    result = await call(fabric, account_id="globex")

    assert (refused.status_code, refused.json()["error"]["code"]) == (422, "unknown_secret")
    assert "GLOBEX_TOKEN" in refused.json()["error"]["message"]
    assert refused.json()["error"]["details"]["missing"] == {"tools[0]": ["GLOBEX_TOKEN"]}
    assert result["status"] == "error"
    assert result["error"] == {
        "code": "internal",
        "message": NOT_SET_UP,
        "details": {"missing_secrets": ["GLOBEX_TOKEN"]},
    }
    assert api.received == []


async def test_a_deleted_secret_fails_the_call_as_not_set_up(
    fabric: Fabric, api: RecordingApi, keys: Keys
) -> None:
    api.reply("POST", "/notify", json={"ok": True})
    await fabric.set_secret("acme", "ACME_TOKEN", VALUE, headers=keys.acme)
    assert (await post_tools(fabric, keys.acme, notify(f"{api.url}/notify"))).status_code == 201
    path = "/v1/accounts/acme/secrets/ACME_TOKEN"

    deleted = await fabric.registry.delete(path, headers=keys.acme)
    again = await fabric.registry.delete(path, headers=keys.acme)
    listed = await fabric.registry.get("/v1/accounts/acme/secrets", headers=keys.acme)
    result = await call(fabric)

    assert (deleted.status_code, again.status_code) == (204, 404)
    assert again.json()["error"]["code"] == "unknown_secret"
    assert listed.json() == {"account_id": "acme", "secrets": []}
    assert result["error"] == {
        "code": "internal",
        "message": NOT_SET_UP,
        "details": {"missing_secrets": ["ACME_TOKEN"]},
    }
    assert api.received == []


async def test_platform_secrets_are_for_the_admins_tools_only(
    fabric: Fabric, api: RecordingApi, keys: Keys
) -> None:
    api.reply("POST", "/notify", json={"ok": True})
    tool = notify(f"{api.url}/notify", secret="BOOKING_KEY")

    by_account = await post_tools(fabric, keys.acme, tool)
    claiming = await post_tools(fabric, keys.acme, {**tool, "platform": True})
    by_admin = await post_tools(fabric, AS_ADMIN, tool)
    shown = await fabric.registry.get(f"/v1/agents/{AGENT}/tools/Notify", headers=keys.acme)
    result = await call(fabric)

    assert (by_account.status_code, by_account.json()["error"]["code"]) == (422, "unknown_secret")
    assert "BOOKING_KEY" in by_account.json()["error"]["message"]
    assert (claiming.status_code, claiming.json()["error"]["message"]) == (
        422,
        "tools[0].platform: set by the registry, not by a tool document",
    )
    assert by_admin.status_code == 201
    assert {"platform", "owner_account"}.isdisjoint(shown.json())
    assert result["status"] == "success", result["error"]
    assert api.received[-1].header("Authorization") == f"Bearer {SECRETS['BOOKING_KEY']}"


async def test_an_agent_moved_to_another_account_uses_that_accounts_secrets(
    fabric: Fabric, api: RecordingApi, keys: Keys
) -> None:
    api.reply("POST", "/notify", json={"ok": True})
    await fabric.set_secret("acme", "ACME_TOKEN", "acme-value", headers=keys.acme)
    await fabric.set_secret("globex", "ACME_TOKEN", "globex-value", headers=keys.globex)
    assert (await post_tools(fabric, keys.acme, notify(f"{api.url}/notify"))).status_code == 201
    await call(fabric)

    moved = await fabric.registry.put(f"/v1/agents/{AGENT}", json={"account_id": "globex"})
    await call(fabric)

    assert moved.status_code == 200
    assert [r.header("Authorization") for r in api.received] == [
        "Bearer acme-value",
        "Bearer globex-value",
    ]


# --- dialect fields that are secrets ---------------------------------------------------------


async def test_a_vocode_signature_secret_is_kept_as_an_account_secret(
    fabric: Fabric, api: RecordingApi, keys: Keys
) -> None:
    api.route("POST", "/booking", vocode_receiver)

    posted = await post_vocode(fabric, api, keys.acme)
    tool_path = f"/v1/agents/{AGENT}/tools/Meeting_Booking_Assistant"
    exported = await fabric.registry.get(tool_path, params={"dialect": "vocode"}, headers=keys.acme)
    canonical = await fabric.registry.get(tool_path, headers=keys.acme)
    listed = await fabric.registry.get("/v1/accounts/acme/secrets", headers=keys.acme)
    result = await call(
        fabric, tool="Meeting_Booking_Assistant", arguments={"length": "30m", "time": "10:30am"}
    )

    assert posted.status_code == 201, posted.text
    (name,) = [s["name"] for s in listed.json()["secrets"]]
    assert name.startswith("SIGNING_Meeting_Booking_Assistant_")
    assert canonical.json()["request"]["signing"] == {
        "scheme": "vocode",
        "secrets": [f"{{{{secrets.{name}}}}}"],
    }
    assert exported.json()["signature_secret"] == "***"
    for response in (posted, exported, canonical, listed):
        assert VOCODE_SECRET not in response.text
    assert result["status"] == "success", result["error"]  # the receiver checked the signature
    # Nor is it in the registry's database: not in the tool, nor in the source it keeps.
    assert VOCODE_SECRET not in _database_dump(fabric)


async def test_a_tools_own_signing_secret_goes_with_it_and_no_other_secret_does(
    fabric: Fabric, api: RecordingApi, keys: Keys
) -> None:
    secret = "/v1/accounts/acme/secrets/ACME_TOKEN"
    assert (await fabric.registry.put(secret, json={"value": VALUE}, headers=keys.acme)).is_success
    posted = await post_vocode(fabric, api, keys.acme)
    assert posted.status_code == 201, posted.text
    assert (await post_tools(fabric, keys.acme, notify(api.url))).status_code == 201

    for tool in ("Meeting_Booking_Assistant", "Notify"):
        deleted = await fabric.registry.delete(
            f"/v1/agents/{AGENT}/tools/{tool}", headers=keys.acme
        )
        assert deleted.status_code == 204, deleted.text

    listed = await fabric.registry.get("/v1/accounts/acme/secrets", headers=keys.acme)
    # The signing secret made from Vocode's signature_secret is gone; the account's own stays.
    assert [s["name"] for s in listed.json()["secrets"]] == ["ACME_TOKEN"]


async def test_a_tools_own_signing_secret_moves_with_its_agent(
    fabric: Fabric, api: RecordingApi, keys: Keys
) -> None:
    api.route("POST", "/booking", vocode_receiver)
    assert (await post_vocode(fabric, api, keys.acme)).status_code == 201

    moved = await fabric.registry.put(f"/v1/agents/{AGENT}", json={"account_id": "globex"})
    result = await call(
        fabric, tool="Meeting_Booking_Assistant", arguments={"length": "30m", "time": "10:30am"}
    )

    assert moved.status_code == 200, moved.text
    assert result["status"] == "success", result["error"]  # signed with the same secret
    acme = await fabric.registry.get("/v1/accounts/acme/secrets", headers=keys.acme)
    globex = await fabric.registry.get("/v1/accounts/globex/secrets", headers=keys.globex)
    assert acme.json()["secrets"] == []
    assert [s["name"][:33] for s in globex.json()["secrets"]] == [
        "SIGNING_Meeting_Booking_Assistant"
    ]


# --- hosts the LLM chooses -------------------------------------------------------------------


async def test_a_host_the_llm_picks_gets_secrets_only_from_allowed_hosts(
    fabric: Fabric, api: RecordingApi, keys: Keys
) -> None:
    api.reply("POST", "/hook", json={"ok": True})
    await fabric.set_secret("acme", "ACME_TOKEN", VALUE, headers=keys.acme)
    port = URL(api.url).port
    tool = notify(f"http://{{{{input.host}}}}:{port}/hook")
    tool["parameters"] = {"type": "object", "properties": {"host": {"type": "string"}}}

    unbounded = await post_tools(fabric, keys.acme, tool)
    bounded = await post_tools(
        fabric, keys.acme, tool | {"request": {**tool["request"], "allowed_hosts": ["127.0.0.1"]}}
    )
    allowed = await call(fabric, arguments={"host": "127.0.0.1"})
    # localhost is 127.0.0.1 too, which the operator allows: the tool's own list refuses it.
    elsewhere = await call(fabric, arguments={"host": "localhost"})

    assert (unbounded.status_code, unbounded.json()["error"]["code"]) == (422, "invalid_tool")
    assert "request.allowed_hosts" in unbounded.json()["error"]["message"]
    assert bounded.status_code == 201, bounded.text
    assert allowed["status"] == "success", allowed["error"]
    assert elsewhere["error"]["code"] == "blocked_destination"
    assert elsewhere["error"]["details"] == {"host": "localhost", "allowed_hosts": ["127.0.0.1"]}
    assert [r.header("Authorization") for r in api.received] == [f"Bearer {VALUE}"]


async def test_signing_to_a_host_the_llm_picks_needs_allowed_hosts(
    fabric: Fabric, keys: Keys
) -> None:
    signing = {"scheme": "standard_webhooks", "secrets": ["whsec_YQ=="]}
    tool = {"name": "Hook", "request": {"url": "https://{{input.host}}/hook", "signing": signing}}

    response = await post_tools(fabric, keys.acme, tool)

    assert (response.status_code, response.json()["error"]["code"]) == (422, "invalid_tool")
    assert "must list the hosts it may call" in response.json()["error"]["message"]


# --- where a value must never appear ---------------------------------------------------------


@dataclass
class Witness:
    """Everything the fabric said, over NATS and REST, while the test ran."""

    nats: list[str]
    rest: list[str]

    async def on_message(self, msg: Msg) -> None:
        self.nats.append(f"{msg.subject} {msg.headers} {msg.data.decode(errors='replace')}")

    async def on_response(self, response: httpx.Response) -> None:
        await response.aread()
        self.rest.append(f"{response.request.method} {response.request.url} {response.text}")


async def test_a_secrets_value_reaches_the_api_and_nothing_else(
    fabric: Fabric,
    api: RecordingApi,
    keys: Keys,
    spans: InMemorySpanExporter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    canary = f"canary-{secrets.token_hex(8)}"
    witness = Witness([], [])
    await fabric.nc.subscribe(">", cb=witness.on_message)  # every message anyone publishes
    for client in (fabric.registry, fabric.billing):
        client.event_hooks = {"request": [], "response": [witness.on_response]}
    registry, billing = fabric.registry, fabric.billing
    # Sent as a header and as the path (a webhook URL whose path is its secret).
    hook = f"/hook/{canary}"
    api.reply("POST", hook, json={"ok": True})
    api.route("POST", "/booking", vocode_receiver)
    await fabric.set_secret("acme", "CANARY", canary, headers=keys.acme)
    tool = notify(f"{api.url}/hook/{{{{secrets.CANARY}}}}", secret="CANARY")
    assert (await post_tools(fabric, keys.acme, tool)).status_code == 201
    vocode = example("vocode_meeting_booking.json", **{"http://example.com": api.url})
    await registry.post(
        f"/v1/agents/{AGENT}/tools", params={"dialect": "vocode"}, content=vocode, headers=keys.acme
    )

    conversation = f"conv-{secrets.token_hex(4)}"
    ok = await call(fabric, conversation_id=conversation)
    signed = await call(
        fabric,
        tool="Meeting_Booking_Assistant",
        arguments={"length": "30m", "time": "10:30am"},
        conversation_id=conversation,
    )
    api.reply("POST", hook, status=500, json={"error": "down"})
    failing = await call(fabric, conversation_id=conversation)
    # A dead letter too, so the dead-letter stream has something to look at.
    await fabric.nc.jetstream().publish(subjects.calls(conversation), b"not json")
    await fabric.drained()
    failed = await _failed(registry, keys.acme, failing["call_id"])
    await registry.get(f"/v1/failed/{failed}", headers=keys.acme)
    await registry.post(
        "/v1/failed/replay", json={"ids": [failed], "dry_run": True}, headers=keys.acme
    )
    await registry.get(f"/v1/agents/{AGENT}/tools", headers=keys.acme)
    await registry.get(
        f"/v1/agents/{AGENT}/tools/Meeting_Booking_Assistant", params={"dialect": "vocode"}
    )
    await registry.get("/v1/accounts/acme/secrets", headers=keys.acme)
    await billing.get("/v1/usage", params={"account_id": "acme"}, headers=keys.acme)
    await billing.get(f"/v1/usage/conversations/{conversation}", headers=keys.acme)
    dead_letters = await _dead_letters(fabric)
    await fabric.nc.flush()

    assert (ok["status"], signed["status"], failing["status"]) == ("success",) * 2 + ("error",)
    # It reached the API, as header and path: the test looks where the value really was.
    assert api.received[0].header("Authorization") == f"Bearer {canary}"
    assert api.received[0].path == hook
    # The ciphertext travelled; the witnesses did see the bucket and the calls.
    assert any(m.startswith("$KV.midcall_secrets.acme.CANARY ") for m in witness.nats)
    assert any(m.startswith("midcall.usage.acme ") for m in witness.nats)
    assert dead_letters
    assert len(spans.get_finished_spans()) > 10
    assert caplog.records
    places = {
        "runtime events": json.dumps(fabric.runtime.events[conversation]),
        "NATS (every subject: events, work items, usage, runs, KV)": "\n".join(witness.nats),
        "REST answers (registry and billing)": "\n".join(witness.rest),
        "dead letters": "\n".join(dead_letters),
        "logs": caplog.text + "\n".join(str(r.args) for r in caplog.records),
        "spans": "\n".join(span.to_json() for span in spans.get_finished_spans()),
        "the database (registry and billing)": _database_dump(fabric),
    }
    for value in (canary, VOCODE_SECRET):
        leaked = [place for place, text in places.items() if value in text]
        assert leaked == [], value


async def _failed(registry: httpx.AsyncClient, headers: dict[str, str], call_id: str) -> int:
    async with asyncio.timeout(10):
        while True:  # the registry stores the failed run a moment after the result
            answer = await registry.get("/v1/failed", params={"call_id": call_id}, headers=headers)
            if answer.json()["failed"]:
                return int(answer.json()["failed"][0]["id"])
            await asyncio.sleep(0.02)


async def _dead_letters(fabric: Fabric) -> list[str]:
    js = fabric.nc.jetstream()
    async with asyncio.timeout(10):
        while True:  # the dispatcher sets it aside a moment after it is published
            info = await js.stream_info(subjects.DEAD_STREAM)
            if info.state.messages:
                break
            await asyncio.sleep(0.02)
    letters = []
    for sequence in range(info.state.first_seq, info.state.last_seq + 1):
        message = await js.get_msg(subjects.DEAD_STREAM, sequence)
        letters.append(f"{message.subject} {message.headers} {message.data!r}")
    return letters


def _database_dump(fabric: Fabric) -> str:
    """Every row of the fabric's SQLite database, as SQL text."""
    database = fabric.settings.sqlalchemy_url().removeprefix("sqlite:///")
    with closing(sqlite3.connect(database)) as connection:
        return "\n".join(connection.iterdump())
