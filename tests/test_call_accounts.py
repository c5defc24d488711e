"""Whose a call is: its agent's account, whatever the call names; and whose a conversation is.

The in-process fabric, with the shared runtime user (which may call any
account's agent): accounts ``acme`` (agent ``acme-bot``) and ``globex``
(agent ``globex-bot``) each have a key.
"""

from typing import Any

from tests.support.api import RecordingApi
from tests.support.fabric import Fabric
from tests.support.keys import Keys
from tests.test_billing_service import eventually
from tests.test_failed_calls import kept
from tests.test_spine import new_call, place

ORDER = {"type": "object", "properties": {"order": {"type": "string"}}}


def lookup(url: str) -> dict[str, Any]:
    return {
        "name": "Lookup",
        "parameters": ORDER,
        "request": {"url": url, "method": "POST"},
        "response": {"variables": {"order_total": "$.total"}},
    }


async def add_agent(fabric: Fabric, account: str, url: str) -> str:
    agent = f"{account}-bot"
    made = await fabric.registry.put(f"/v1/agents/{agent}", json={"account_id": account})
    assert made.status_code == 200, made.text
    await fabric.register(agent, lookup(url))
    return agent


async def two_agents(fabric: Fabric, api: RecordingApi) -> tuple[str, str]:
    """acme's and globex's agents, each with a Lookup tool answering its own total."""
    api.reply("POST", "/acme", json={"total": 42})
    api.reply("POST", "/globex", json={"total": 7})
    return (
        await add_agent(fabric, "acme", f"{api.url}/acme"),
        await add_agent(fabric, "globex", f"{api.url}/globex"),
    )


async def usage(fabric: Fabric, account: str) -> dict[str, Any]:
    response = await fabric.billing.get("/v1/usage", params={"account_id": account})
    return dict(response.json())


async def test_a_call_naming_another_account_is_billed_and_kept_as_its_agents(
    fabric: Fabric, api: RecordingApi, keys: Keys
) -> None:
    api.reply("POST", "/down", status=503, json={"error": "down"})
    agent = await add_agent(fabric, "acme", f"{api.url}/down")
    call = new_call(tool="Lookup", agent_id=agent, arguments={"order": "o-1"}, account_id="globex")

    result = await place(fabric, call)

    assert result["error"]["code"] == "http_error"
    [row] = await kept(fabric, call_id=call["call_id"])
    assert row["account_id"] == "acme"

    async def billed() -> dict[str, Any] | None:
        acme = await usage(fabric, "acme")
        return acme if acme["calls"] == 1 else None

    assert (await eventually(billed))["errors"] == 1
    assert (await usage(fabric, "globex"))["calls"] == 0
    # globex learns nothing of it: not listed, not shown, not replayable, not previewed.
    path = f"/v1/failed/{row['id']}"
    as_acme = await fabric.registry.get(path, headers=keys.acme)
    as_globex = await fabric.registry.get(path, headers=keys.globex)
    listed = await fabric.registry.get("/v1/failed", headers=keys.globex)
    preview = await fabric.registry.post(
        "/v1/failed/replay", json={"ids": [row["id"]], "dry_run": True}, headers=keys.globex
    )
    assert as_acme.json()["call"]["account_id"] == "acme"
    assert as_globex.status_code == 404
    assert listed.json()["failed"] == []
    assert preview.json()["items"] == []


async def test_two_accounts_using_one_conversation_id_keep_their_own_variables(
    fabric: Fabric, api: RecordingApi, keys: Keys
) -> None:
    acme, globex = await two_agents(fabric, api)
    first = new_call(tool="Lookup", agent_id=acme, arguments={"order": "o-1"})
    conversation = first["conversation_id"]
    second = new_call(
        tool="Lookup", agent_id=globex, arguments={"order": "o-2"}, conversation_id=conversation
    )

    await place(fabric, first)
    await place(fabric, second)

    path = f"/v1/conversations/{conversation}/variables"
    as_acme = await fabric.registry.get(path, headers=keys.acme)
    as_globex = await fabric.registry.get(path, headers=keys.globex)
    rendered = await fabric.registry.post(
        f"/v1/conversations/{conversation}/render",
        json={"template": "Total: {{order_total}}"},
        headers=keys.acme,
    )
    assert as_acme.json() == {"conversation_id": conversation, "variables": {"order_total": 42}}
    assert as_globex.json() == {"conversation_id": conversation, "variables": {"order_total": 7}}
    assert rendered.json()["text"] == "Total: 42"


async def test_one_call_id_in_two_accounts_conversations_is_two_calls(
    fabric: Fabric, api: RecordingApi, keys: Keys
) -> None:
    acme, globex = await two_agents(fabric, api)
    first = new_call(tool="Lookup", agent_id=acme, arguments={"order": "o-1"})
    # The same call id and conversation id, another account's agent: not a repeat.
    again = {**first, "agent_id": globex}

    await place(fabric, first)
    await fabric.runtime.call(again, msg_id=f"{first['call_id']}-globex")

    async def both_billed() -> bool | None:
        calls = [(await usage(fabric, a))["calls"] for a in ("acme", "globex")]
        return calls == [1, 1] or None

    await eventually(both_billed)
    assert [r.path for r in api.received] == ["/acme", "/globex"]
