"""Who may do what over REST: every endpoint, called with no key, a wrong key, another
account's key, the owning account's key and the admin key.

The fabric runs in-process on a real nats-server, so account keys made over
REST reach billing through the keys bucket, as in production.
"""

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from shared.security.api_keys import bearer
from tests.support.api import RecordingApi
from tests.support.fabric import Fabric
from tests.support.keys import AS_ADMIN
from tests.test_spine import booking_tool, new_call, place

# What only acme's callers may ever read: none may appear in an answer to anyone else.
# (The conversation id is not among them: callers send it, and answers echo it.)
ACME_ONLY = ("acme-private-path", "acme-variable-value", "acme-call-")
CALLERS = ("none", "wrong", "other", "own", "admin")
PRIVATE_URL = "http://127.0.0.1:9/acme-private-path"
# What no answer may ever contain, to anyone: a secret's value.
SECRET_VALUE = "acme-secret-value-never-shown"


@dataclass
class World:
    fabric: Fabric
    keys: dict[str, dict[str, str]]  # caller -> headers
    conversation: str
    failed_id: int
    acme_key_id: str


@dataclass(frozen=True)
class Endpoint:
    service: str  # registry | billing
    method: str
    path: str
    expected: dict[str, int]  # caller -> status
    body: Any = None
    before: Callable[[World], Any] | None = None  # re-creates what a previous call removed


def statuses(other: int, own: int, admin: int | None = None, anyone: int = 401) -> dict[str, int]:
    return {"none": anyone, "wrong": anyone, "other": other, "own": own, "admin": admin or own}


async def _temp_secret(world: World) -> None:
    await world.fabric.set_secret("acme", "TEMP", SECRET_VALUE)


async def _temp_tool(world: World) -> None:
    tool = booking_tool("http://127.0.0.1:9") | {"name": "Temp"}
    response = await world.fabric.registry.post("/v1/agents/acme-bot/tools", json={"tools": [tool]})
    assert response.status_code == 201, response.text


ENDPOINTS = [
    Endpoint("registry", "GET", "/healthz", statuses(200, 200, anyone=200)),
    Endpoint("registry", "GET", "/metrics/", statuses(200, 200, anyone=200)),
    Endpoint("billing", "GET", "/healthz", statuses(200, 200, anyone=200)),
    Endpoint("billing", "GET", "/metrics/", statuses(200, 200, anyone=200)),
    # What the API is, for any caller with a key: the OpenAPI document and its pages.
    Endpoint("registry", "GET", "/openapi.json", statuses(200, 200)),
    Endpoint("registry", "GET", "/docs", statuses(200, 200)),
    Endpoint("registry", "GET", "/redoc", statuses(200, 200)),
    Endpoint("billing", "GET", "/openapi.json", statuses(200, 200)),
    Endpoint("billing", "GET", "/docs", statuses(200, 200)),
    Endpoint("billing", "GET", "/redoc", statuses(200, 200)),
    Endpoint("registry", "PUT", "/v1/agents/acme-bot", statuses(403, 200), {"account_id": "acme"}),
    Endpoint("registry", "GET", "/v1/agents/acme-bot", statuses(404, 200)),
    Endpoint(
        "registry",
        "POST",
        "/v1/agents/acme-bot/tools",
        statuses(404, 201),
        {"tools": [booking_tool("http://127.0.0.1:9", url=PRIVATE_URL) | {"name": "Again"}]},
    ),
    Endpoint("registry", "GET", "/v1/agents/acme-bot/tools", statuses(404, 200)),
    Endpoint("registry", "GET", "/v1/agents/acme-bot/tools/BookAppointment", statuses(404, 200)),
    Endpoint("registry", "GET", "/v1/agents/acme-bot/manifest?format=openai", statuses(404, 200)),
    Endpoint(
        "registry",
        "DELETE",
        "/v1/agents/acme-bot/tools/Temp",
        statuses(404, 204),
        before=_temp_tool,
    ),
    Endpoint("registry", "GET", "/v1/conversations/{conversation}/variables", statuses(200, 200)),
    Endpoint(
        "registry",
        "POST",
        "/v1/conversations/{conversation}/render",
        statuses(200, 200),
        {"template": "{{mark}}"},
    ),
    Endpoint("registry", "GET", "/v1/failed", statuses(200, 200)),
    Endpoint("registry", "GET", "/v1/failed/{failed_id}", statuses(404, 200)),
    Endpoint(
        "registry",
        "POST",
        "/v1/failed/replay",
        statuses(200, 200),
        {"ids": ["{failed_id}"], "dry_run": True},
    ),
    Endpoint("registry", "POST", "/v1/accounts", statuses(403, 403, 201), {"account_id": "new"}),
    Endpoint("registry", "GET", "/v1/accounts", statuses(403, 403, 200)),
    Endpoint("registry", "GET", "/v1/accounts/acme", statuses(404, 200)),
    Endpoint("registry", "POST", "/v1/accounts/acme/keys", statuses(403, 403, 201)),
    Endpoint("registry", "GET", "/v1/accounts/acme/keys", statuses(404, 200)),
    Endpoint("registry", "GET", "/v1/accounts/acme/secrets", statuses(404, 200)),
    Endpoint(
        "registry",
        "PUT",
        "/v1/accounts/acme/secrets/BOOKING_KEY",
        statuses(404, 200),
        {"value": SECRET_VALUE},
    ),
    Endpoint(
        "registry",
        "DELETE",
        "/v1/accounts/acme/secrets/TEMP",
        statuses(404, 204),
        before=_temp_secret,
    ),
    Endpoint("billing", "GET", "/v1/usage?account_id=acme", statuses(404, 200)),
    Endpoint("billing", "GET", "/v1/usage/conversations/{conversation}", statuses(404, 200)),
]


async def _account_key(fabric: Fabric, account_id: str) -> tuple[str, str]:
    made = await fabric.registry.post("/v1/accounts", json={"account_id": account_id})
    assert made.status_code == 201, made.text
    key = await fabric.registry.post(f"/v1/accounts/{account_id}/keys")
    assert key.status_code == 201, key.text
    return key.json()["key"], key.json()["key_id"]


@pytest.fixture
async def world(fabric: Fabric, api: RecordingApi) -> World:
    acme, acme_key_id = await _account_key(fabric, "acme")
    globex, _ = await _account_key(fabric, "globex")
    as_acme = bearer(acme)
    registry = fabric.registry
    # The tool's {{secrets.BOOKING_KEY}}: each account's own (the platform's are the admin's).
    await fabric.set_secret("acme", "BOOKING_KEY", SECRET_VALUE, headers=as_acme)
    await fabric.set_secret("globex", "BOOKING_KEY", "globex-booking-key", headers=bearer(globex))
    # acme's agent, put there with acme's own key; its API answers and fails in turn.
    await registry.put("/v1/agents/acme-bot", json={"account_id": "acme"}, headers=as_acme)
    api.reply("POST", "/acme-private-path", json={"mark": "acme-variable-value"})
    tool = booking_tool(api.url, url=f"{api.url}/acme-private-path")
    tool["response"] = {"variables": {"mark": "$.mark"}}
    added = await registry.post(
        "/v1/agents/acme-bot/tools", json={"tools": [tool]}, headers=as_acme
    )
    assert added.status_code == 201, added.text
    await registry.post(
        "/v1/agents/globex-bot/tools", json={"tools": [tool]}, headers=bearer(globex)
    )
    conversation = "acme-conv-1"
    ok = new_call(agent_id="acme-bot", call_id="acme-call-1", conversation_id=conversation)
    answer = await place(fabric, ok)
    assert answer["status"] == "success", answer["error"]
    api.reply("POST", "/acme-private-path", status=500, json={"error": "acme-variable-value"})
    failing = new_call(agent_id="acme-bot", call_id="acme-call-2", conversation_id=conversation)
    assert (await place(fabric, failing))["status"] == "error"
    failed_id = await _failed_id(fabric, "acme-call-2")
    await fabric.drained()
    keys = {
        "none": {},
        "wrong": bearer("mck_0123456789abcdef_not-a-real-secret"),
        "other": bearer(globex),
        "own": as_acme,
        "admin": AS_ADMIN,
    }
    return World(fabric, keys, conversation, failed_id, acme_key_id)


async def _failed_id(fabric: Fabric, call_id: str) -> int:
    async with asyncio.timeout(10):
        while True:  # the registry stores the failed run a moment after the result
            rows = (await fabric.registry.get("/v1/failed", params={"call_id": call_id})).json()
            if rows["failed"]:
                return int(rows["failed"][0]["id"])
            await asyncio.sleep(0.02)


def _filled(value: Any, world: World) -> Any:
    if isinstance(value, str):
        text = value.replace("{conversation}", world.conversation)
        text = text.replace("{failed_id}", str(world.failed_id))
        return int(text) if text.isdigit() and value.startswith("{failed_id") else text
    if isinstance(value, list):
        return [_filled(item, world) for item in value]
    if isinstance(value, dict):
        return {key: _filled(item, world) for key, item in value.items()}
    return value


async def test_every_endpoint_answers_each_caller_as_documented_and_leaks_nothing(
    world: World,
) -> None:
    fabric = world.fabric
    bases = {"registry": fabric.registry.base_url, "billing": fabric.billing.base_url}
    seen: list[str] = []
    async with httpx.AsyncClient() as http:
        for endpoint in ENDPOINTS:
            for caller in CALLERS:
                if endpoint.before is not None:
                    await endpoint.before(world)
                response = await http.request(
                    endpoint.method,
                    f"{bases[endpoint.service]}{_filled(endpoint.path, world)}",
                    json=_filled(endpoint.body, world),
                    headers=world.keys[caller],
                )
                where = f"{endpoint.method} {endpoint.path} as {caller}"
                seen.append(where)
                assert response.status_code == endpoint.expected[caller], (where, response.text)
                if response.status_code >= 400:
                    assert set(response.json()) == {"error"}, where
                    assert set(response.json()["error"]) == {"code", "message", "details"}, where
                if caller not in ("own", "admin") and endpoint.path != "/metrics/":
                    for private in ACME_ONLY:
                        assert private not in response.text, (where, private)
                assert SECRET_VALUE not in response.text, where
    assert len(seen) == len(ENDPOINTS) * len(CALLERS)


async def test_what_an_account_sees_is_its_own(world: World) -> None:
    registry, billing = world.fabric.registry, world.fabric.billing
    own, other = world.keys["own"], world.keys["other"]
    path = f"/v1/conversations/{world.conversation}/variables"

    assert (await registry.get(path, headers=own)).json()["variables"] == {
        "mark": "acme-variable-value"
    }
    assert (await registry.get(path, headers=other)).json()["variables"] == {}
    assert [
        r["call_id"] for r in (await registry.get("/v1/failed", headers=own)).json()["failed"]
    ] == ["acme-call-2"]
    assert (await registry.get("/v1/failed", headers=other)).json()["failed"] == []
    asked_for_acme = {"account_id": "acme"}
    assert (await registry.get("/v1/failed", params=asked_for_acme, headers=other)).json()[
        "failed"
    ] == []
    replay = {"ids": [world.failed_id], "dry_run": True}
    assert (await registry.post("/v1/failed/replay", json=replay, headers=other)).json()[
        "items"
    ] == []
    usage = (await billing.get("/v1/usage", params=asked_for_acme, headers=own)).json()
    assert (usage["calls"], usage["errors"]) == (2, 1)
    keys = (await registry.get("/v1/accounts/acme/keys", headers=own)).json()["keys"]
    assert [k["key_id"] for k in keys] == [world.acme_key_id]
    assert set(keys[0]) == {"key_id", "account_id", "created_at", "revoked_at"}


async def test_any_key_reads_the_openapi_document_and_its_pages(world: World) -> None:
    other = world.keys["other"]
    for client, title in (
        (world.fabric.registry, "Midcall registry"),
        (world.fabric.billing, "Midcall billing"),
    ):
        document = (await client.get("/openapi.json", headers=other)).json()
        page = await client.get("/docs", headers=other)

        assert document["info"]["title"] == title
        assert not {"/openapi.json", "/docs", "/redoc"} & set(document["paths"])
        assert "url: '/openapi.json'" in page.text


async def test_a_revoked_key_stops_working_everywhere(world: World) -> None:
    registry, billing = world.fabric.registry, world.fabric.billing
    own = world.keys["own"]

    revoked = await registry.delete(f"/v1/accounts/acme/keys/{world.acme_key_id}", headers=own)
    await asyncio.sleep(2.1)  # services trust a key they looked up for 2 s

    assert revoked.status_code == 204
    assert (await registry.get("/v1/agents/acme-bot", headers=own)).status_code == 401
    usage = await billing.get("/v1/usage", params={"account_id": "acme"}, headers=own)
    assert usage.status_code == 401
    assert usage.headers["www-authenticate"] == "Bearer"
