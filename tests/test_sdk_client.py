"""The Python SDK against the fabric as ``midcall up`` runs it: real users, accounts and streams.

A runtime using ``MidcallClient`` hears the pending, the progress in order and
exactly one result of each call it places, gets each error code as its own
exception with the message to say, re-issues a call by its id without running
it twice (and a call id of another conversation is another call), keeps its
calls through a nats-server restart, and with an account's runtime credentials
reaches that account's agents only.
"""

import asyncio
import secrets
from collections.abc import AsyncIterator
from typing import Any

import httpx
import nats
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
from shared.contract import subjects
from shared.contract.errors import ErrorCode
from shared.contract.events import (
    StoredEvents,
    StoredEventsRequest,
    ToolCallPending,
    ToolCallProgress,
    ToolCallResult,
)
from shared.fabric.nats_server import MAX_PAYLOAD
from tests.support.running import BOOKED, Running, conversation, fabric_up, lookup_tool
from tests.test_runtime_accounts import live

pytestmark = pytest.mark.asyncio(loop_scope="module")
AGENT = "salon-bot"
WAIT_S = 15.0


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def running(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Running]:
    async with fabric_up(tmp_path_factory, "sdk") as running:
        url = running.api.url
        await running.add_tools(
            AGENT,
            lookup_tool(f"{url}/lookup"),
            lookup_tool(f"{url}/slow", "Slow"),
            lookup_tool(f"{url}/counted", "Counted"),
        )
        await running.add_account("acme")
        await running.add_tools("acme-bot", lookup_tool(f"{url}/lookup"), account="acme")
        await running.add_tools("acme-desk", lookup_tool(f"{url}/slow", "Slow"), account="acme")
        yield running


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


def progress(
    call: Call, message: str, *, speak: bool = False, percent: float | None = None
) -> ToolCallProgress:
    return ToolCallProgress(
        call_id=call.call_id,
        conversation_id=call.conversation_id,
        message=message,
        speak=speak,
        percent=percent,
    )


@pytest.mark.parametrize("signed_in_as", ["runtime", "account"])
async def test_a_calls_progress_comes_in_order_once_each_until_its_result(
    running: Running, signed_in_as: str
) -> None:
    credentials, account = running.credentials, None
    if signed_in_as == "account":
        credentials, account = await running.account_credentials("acme"), "acme"
        await live(running.fabric.nats_url, credentials.connect_options())
    agent, release = await running.held_agent(account or "")
    conv = conversation()
    async with MidcallClient(running.fabric.nats_url, credentials) as mc:
        call = await mc.call(agent, conv, "Book", {"order": "o-1"})
        other = await mc.call(agent, conv, "Book", {"order": "o-2"})
        searching = progress(call, "Searching the diary.", percent=20)
        found = progress(call, "Found a slot at ten.", speak=True, percent=80)
        booking = progress(call, "Booking it now.")
        theirs = progress(other, "Still searching.")
        async with asyncio.timeout(WAIT_S):
            await call.pending()
            # The first update again, as a redelivery would bring it: heard once.
            await running.publish_progress(
                searching, theirs, searching, found, runtime_account=account
            )
            first = call.progress()
            heard_first = [await anext(first), await anext(first)]
            # A loop started after those were heard reads them from the start.
            second = call.progress()
            await running.publish_progress(booking, runtime_account=account)
            release.set()
            heard_first += [update async for update in first]
            ended_at_result = call.done
            heard_second = [update async for update in second]
            heard_theirs = [update async for update in other.progress()]
            result = await call.result()

    assert heard_first == heard_second == [searching, found, booking]
    assert ended_at_result
    assert heard_theirs == [theirs]
    assert (result.status, result.result) == ("success", BOOKED)


@pytest.mark.parametrize("signed_in_as", ["runtime", "account"])
async def test_a_long_running_tool_reports_through_the_registry_to_its_runtime(
    running: Running, signed_in_as: str
) -> None:
    """The whole path, signed in as each service's own NATS user: the API answers 202,
    reports through the callback URL and token its request carried, and completes."""
    credentials, account = running.credentials, None
    if signed_in_as == "account":
        credentials, account = await running.account_credentials("acme"), "acme"
        await live(running.fabric.nats_url, credentials.connect_options())
    path = f"/search-{secrets.token_hex(4)}"
    running.api.reply("POST", path, status=202, json={"queued": True})
    agent = f"search-{secrets.token_hex(4)}"
    search = lookup_tool(f"{running.api.url}{path}", "Search")
    search["request"] |= {"callback_timeout_s": 30}
    await running.add_tools(agent, search, account=account or "")

    async with MidcallClient(running.fabric.nats_url, credentials) as mc:
        # Counted before the call: its request may arrive before its pending is read.
        before = len(running.api.received)
        call = await mc.call(agent, conversation(), "Search", {"order": "o-1"})
        async with asyncio.timeout(WAIT_S):
            await call.pending()
            received = await running.api.wait_for(before + 1)
            sent = next(r for r in reversed(received) if r.path == path)
            url, token = sent.header("Midcall-Callback-Url"), sent.header("Midcall-Callback-Token")
            assert url == f"{running.registry_url}/v1/calls/{call.call_id}"
            headers = {"Midcall-Callback-Token": token or ""}
            async with httpx.AsyncClient(headers=headers) as api:
                said = await api.post(
                    f"{url}/progress", json={"message": "Found two.", "speak": True}
                )
                updates = call.progress()
                heard = await anext(updates)
                done = await api.post(f"{url}/complete", json={"order": "o-1", "found": 2})
                again = await api.post(f"{url}/complete", json={"order": "o-1", "found": 3})
            result = await call.result()
            rest = [update async for update in updates]

    assert (said.status_code, done.status_code, again.status_code) == (202, 200, 409)
    assert heard == progress(call, "Found two.", speak=True).model_copy(update={"at": heard.at})
    assert rest == []
    assert (result.status, result.result, result.http_status) == (
        "success",
        {"order": "o-1", "found": 2},
        200,
    )


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


async def signed_in(running: Running, signed_in_as: str) -> Credentials:
    """The shared runtime user's credentials, or account acme's own (live in nats-server)."""
    if signed_in_as == "runtime":
        return running.credentials
    credentials = await running.account_credentials("acme")
    await live(running.fabric.nats_url, credentials.connect_options())
    return credentials


@pytest.mark.parametrize(
    ("signed_in_as", "agent", "tool", "path"),
    [("runtime", AGENT, "Counted", "/counted"), ("account", "acme-bot", "Lookup", "/lookup")],
)
async def test_a_reissued_call_id_runs_once_and_a_new_process_hears_its_result(
    running: Running, signed_in_as: str, agent: str, tool: str, path: str
) -> None:
    credentials = await signed_in(running, signed_in_as)
    before = len([r for r in running.api.received if r.path == path])
    running.api.reply("POST", "/counted", json={"counted": True})
    conv, call_id = conversation(), f"call-{secrets.token_hex(4)}"

    async with MidcallClient(running.fabric.nats_url, credentials) as first:
        call = await first.call(agent, conv, tool, {"order": "o-1"}, call_id=call_id)
        again = await first.call(agent, conv, tool, {"order": "o-1"}, call_id=call_id)
        async with asyncio.timeout(WAIT_S):
            result = await call.result()
    # A process that restarted re-issues the call it had placed: the fabric does not run
    # it again, and the result it already gave reaches the new process (read from the
    # stream by the shared user, asked for with an account's credentials).
    async with MidcallClient(running.fabric.nats_url, credentials) as restarted:
        reissued = await restarted.call(agent, conv, tool, {"order": "o-1"}, call_id=call_id)
        async with asyncio.timeout(WAIT_S):
            heard = await reissued.result()

    assert again is call
    assert heard == result
    assert len([r for r in running.api.received if r.path == path]) == before + 1


async def test_an_account_asks_for_its_own_calls_stored_events_only(running: Running) -> None:
    acme = await signed_in(running, "account")
    await running.add_account("globex")
    globex = await running.account_credentials("globex")
    await live(running.fabric.nats_url, globex.connect_options())
    conv = conversation()
    async with MidcallClient(running.fabric.nats_url, acme) as mc:
        call = await mc.call("acme-bot", conv, "Lookup", {"order": "o-1"})
        async with asyncio.timeout(WAIT_S):
            result = await call.result()

    async def ask(credentials: Credentials, body: bytes) -> StoredEvents:
        nc = await nats.connect(running.fabric.nats_url, **credentials.connect_options())
        try:
            reply = await nc.request(subjects.stored(conv), body, timeout=WAIT_S)
        finally:
            await nc.close()
        return StoredEvents.model_validate_json(reply.data)

    asked = StoredEventsRequest(call_id=call.call_id).model_dump_json().encode()
    own, others, unreadable = await asyncio.gather(
        ask(acme, asked), ask(globex, asked), ask(acme, b'{"call": 1}')
    )

    assert [(e.kind, e.event["call_id"]) for e in own.events] == [
        ("pending", call.call_id),
        ("result", call.call_id),
    ]
    assert ToolCallResult.model_validate(own.events[1].event) == result
    # The same conversation id in globex's account is globex's conversation: nothing there.
    assert others == StoredEvents()
    assert unreadable.events == []
    assert unreadable.error is not None
    assert "call_id" in unreadable.error


async def test_the_same_call_id_in_two_conversations_is_two_calls(running: Running) -> None:
    before = len([r for r in running.api.received if r.path == "/lookup"])
    call_id = f"call-{secrets.token_hex(4)}"

    async with MidcallClient(running.fabric.nats_url, running.credentials) as mc:
        calls = [
            await mc.call(AGENT, conversation(), "Lookup", {"order": "o-1"}, call_id=call_id)
            for _ in range(2)
        ]
        async with asyncio.timeout(WAIT_S):
            results = [await call.result() for call in calls]

    assert [(r.conversation_id, r.call_id, r.status, r.result) for r in results] == [
        (call.conversation_id, call_id, "success", {"order": "o-1", "total": 42}) for call in calls
    ]
    assert len([r for r in running.api.received if r.path == "/lookup"]) == before + 2


async def test_the_same_ids_in_two_accounts_are_two_calls(running: Running) -> None:
    acme = await signed_in(running, "account")
    await running.add_account("initech")
    await running.add_tools(
        "initech-bot", lookup_tool(f"{running.api.url}/lookup"), account="initech"
    )
    initech = await running.account_credentials("initech")
    await live(running.fabric.nats_url, initech.connect_options())
    conv, call_id = conversation(), f"call-{secrets.token_hex(4)}"

    async def placed(credentials: Credentials, agent: str) -> ToolCallResult:
        async with MidcallClient(running.fabric.nats_url, credentials) as mc:
            call = await mc.call(agent, conv, "Lookup", {"order": "o-1"}, call_id=call_id)
            async with asyncio.timeout(WAIT_S):
                return await call.result()

    results = [await placed(acme, "acme-bot"), await placed(initech, "initech-bot")]

    assert [(r.conversation_id, r.call_id, r.status) for r in results] == [
        (conv, call_id, "success")
    ] * 2


@pytest.mark.parametrize(("signed_in_as", "agent"), [("runtime", AGENT), ("account", "acme-desk")])
async def test_a_call_in_flight_through_a_nats_server_restart_gets_one_result(
    running: Running, signed_in_as: str, agent: str
) -> None:
    credentials = await signed_in(running, signed_in_as)
    arrived, release = asyncio.Event(), asyncio.Event()

    async def slow(_: web.Request) -> web.StreamResponse:
        arrived.set()
        await release.wait()
        return web.json_response({"order": "o-1", "slow": True})

    running.api.route("POST", "/slow", slow)
    async with MidcallClient(running.fabric.nats_url, credentials) as mc:
        call = await mc.call(agent, conversation(), "Slow", {"order": "o-1"}, deadline=30)
        async with asyncio.timeout(WAIT_S):
            await call.pending()
            await arrived.wait()
        await running.fabric.restart_nats(down_s=0.5)
        release.set()
        async with asyncio.timeout(30):
            result = await call.result()

    assert (result.status, result.result) == ("success", {"order": "o-1", "slow": True})


async def test_a_call_placed_while_nats_server_is_down_is_placed_once_it_is_back(
    running: Running,
) -> None:
    """Longer down than one publish waits for its confirmation (nats-py's 5 s): the SDK sends
    the call again, with the same message id, until JetStream takes it."""
    async with MidcallClient(running.fabric.nats_url, running.credentials) as mc:
        restarting = asyncio.create_task(running.fabric.restart_nats(down_s=6.0))
        await asyncio.sleep(0)  # the restart's first step: nats-server is killed
        call = await mc.call(AGENT, conversation(), "Lookup", {"order": "o-1"})
        await restarting
        async with asyncio.timeout(30):
            result = await call.result()

    assert result.status == "success"


async def test_a_call_whose_placing_failed_is_placed_by_the_next_call_of_its_id(
    running: Running,
) -> None:
    conv = conversation()
    too_large = {"order": "o" * MAX_PAYLOAD}
    async with MidcallClient(running.fabric.nats_url, running.credentials) as mc:
        with pytest.raises(nats.errors.MaxPayloadError):
            await mc.call(AGENT, conv, "Lookup", too_large, call_id="call-again")
        call = await mc.call(AGENT, conv, "Lookup", {"order": "o-1"}, call_id="call-again")
        async with asyncio.timeout(WAIT_S):
            result = await call.result()

    assert (result.call_id, result.status) == ("call-again", "success")


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
