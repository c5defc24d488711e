"""Cancelling one call: ``midcall.conv.<conv>.cancel`` with ``{call_id, reason}``.

A call still running is aborted and answered ``cancelled`` exactly once, and
the tool's ``request.on_cancel`` hears it with the call's Idempotency-Key; a
call already answered keeps its result; a cancel heard before the call's work
item makes the call answer ``cancelled`` without its API being called.
"""

import asyncio
import json
from typing import Any

import pytest
from aiohttp import web

from tests.support.api import RecordingApi
from tests.support.fabric import Fabric
from tests.test_python_tools import python_tool
from tests.test_spine import AGENT, booking_tool, error_result, events_of, new_call, pending, place


def cancellable(api: RecordingApi, **request: Any) -> dict[str, Any]:
    """CheckIn, whose API hears cancels at /cancel/<call id>."""
    tool = {**booking_tool(api.url, **request), "name": "CheckIn"}
    tool["request"] |= {"on_cancel": {"url": f"{api.url}/cancel/{{{{call.id}}}}"}}
    return tool


def cancelled(call: dict[str, Any], reason: str | None, tool: str = "CheckIn") -> dict[str, Any]:
    return error_result(
        {**call, "tool": tool},
        "cancelled",
        f"The {tool} action was cancelled before it finished.",
        {"reason": reason},
        attempts=0,
    )


def hanging_with_cancel(api: RecordingApi, call: dict[str, Any]) -> asyncio.Event:
    """/book never answers; the event is set when /cancel/<call id> is told."""
    never, told = asyncio.Event(), asyncio.Event()

    async def hangs(_: web.Request) -> web.StreamResponse:
        await never.wait()
        return web.json_response({})

    async def heard_cancel(_: web.Request) -> web.StreamResponse:
        told.set()
        return web.json_response({"cancelled": True})

    api.route("POST", "/book", hangs)
    api.route("POST", f"/cancel/{call['call_id']}", heard_cancel)
    return told


async def cancel(fabric: Fabric, call: dict[str, Any], reason: str | None = None) -> None:
    body = {"call_id": call["call_id"]} | ({"reason": reason} if reason else {})
    await fabric.runtime.client.jetstream().publish(
        f"midcall.conv.{call['conversation_id']}.cancel", json.dumps(body).encode()
    )


@pytest.mark.parametrize("stopped_by", ["cancel", "end"])
async def test_a_running_call_is_stopped_once_and_its_api_told(
    fabric: Fabric, api: RecordingApi, stopped_by: str
) -> None:
    call = new_call(tool="CheckIn")
    told = hanging_with_cancel(api, call)
    await fabric.register(AGENT, cancellable(api))
    await fabric.runtime.listen(call["conversation_id"])

    await fabric.runtime.call(call)
    await api.wait_for(1)
    if stopped_by == "cancel":
        await cancel(fabric, call, "the caller hung up")
    else:
        await fabric.runtime.end(call["conversation_id"])
    await fabric.runtime.wait_for(call["conversation_id"], "result", call["call_id"])
    await asyncio.wait_for(told.wait(), 10)
    await fabric.drained()

    ended = error_result(
        call, "cancelled", "The conversation ended before the action finished.", attempts=0
    )
    assert events_of(fabric, call) == [
        pending(call, speech="One moment while I book that."),
        cancelled(call, "the caller hung up") if stopped_by == "cancel" else ended,
    ]
    booked, told_api = api.received
    assert (told_api.method, told_api.path) == ("POST", f"/cancel/{call['call_id']}")
    assert told_api.header("Idempotency-Key") == call["call_id"]
    assert told_api.header("Authorization") == booked.header("Authorization")
    assert told_api.body == b""


async def test_a_cancel_after_the_result_changes_nothing(fabric: Fabric, api: RecordingApi) -> None:
    api.reply("POST", "/book", json={"success": True})
    await fabric.register(AGENT, cancellable(api))
    call = new_call(tool="CheckIn")

    result = await place(fabric, call)
    await cancel(fabric, call, "too late")
    # The conversation's next call still goes through.
    after = new_call(tool="CheckIn", conversation_id=call["conversation_id"])
    await place(fabric, after)
    await fabric.drained()

    assert result["status"] == "success"
    assert [e["status"] for e in events_of(fabric, call)] == ["pending", "success"]
    assert [r.path for r in api.received] == ["/book", "/book"]


async def kept_cancel(
    fabric: Fabric, api: RecordingApi, forgotten_after_s: float | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A call and its result, placed after a cancel of it was heard (and, when
    ``forgotten_after_s``, after that long passed with no other cancel)."""
    api.reply("POST", "/book", json={"success": True})
    await fabric.register(AGENT, cancellable(api))
    call = new_call(tool="CheckIn")
    await fabric.runtime.listen(call["conversation_id"])
    await cancel(fabric, call, "changed their mind")
    await fabric.nc.flush()
    if forgotten_after_s is not None:
        await asyncio.sleep(forgotten_after_s)  # the time it is kept passes
    return call, await place(fabric, call)


async def test_a_cancel_heard_before_the_call_answers_it_without_calling_the_api(
    fabric: Fabric, api: RecordingApi
) -> None:
    call, result = await kept_cancel(fabric, api, None)

    assert {k: result[k] for k in ("status", "error")} == {
        "status": "error",
        "error": cancelled(call, "changed their mind")["error"],
    }
    assert api.received == []


async def test_a_cancel_heard_longer_ago_than_it_is_kept_no_longer_applies(
    fabric: Fabric, api: RecordingApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("shared.fabric.executors.CANCEL_MEMORY_S", 0.2)

    _, result = await kept_cancel(fabric, api, 0.3)

    assert result["status"] == "success"
    assert [r.path for r in api.received] == ["/book"]


SLOW = '''
async def slow(ctx: RunContext) -> dict:
    """Waits on an API that takes its time."""
    async with httpx.AsyncClient(timeout=60.0) as client:
        await client.get(ctx.context["api"])
    return {"status": "success"}
'''


async def test_a_running_function_is_cancelled(fabric: Fabric, api: RecordingApi) -> None:
    api.reply("GET", "/slow", json={}, delay_s=30)
    await fabric.register(AGENT, python_tool(SLOW, "slow"))
    call = new_call(tool="slow", arguments={}, context={"api": f"{api.url}/slow"})
    await fabric.runtime.listen(call["conversation_id"])

    await fabric.runtime.call(call)
    await api.wait_for(1)
    await cancel(fabric, call)
    result = await fabric.runtime.wait_for(call["conversation_id"], "result", call["call_id"])

    assert result["error"] == {
        "code": "cancelled",
        "message": "The slow action was cancelled before it finished.",
        "details": {"reason": None},
    }


@pytest.mark.parametrize(
    ("request_fields", "message"),
    [
        pytest.param(
            {"on_cancel": {"url": "ftp://api.example.com/cancel"}},
            "tools[0].request.on_cancel.url: Value error, must be an absolute http:// or "
            "https:// URL",
            id="not-http",
        ),
        pytest.param(
            {"on_cancel": {"url": "https://{{input.host}}/cancel"}},
            "tools[0].request: Value error, on_cancel.url: the host comes from the call's "
            "arguments ({{input.*}}), so the LLM picks where the request goes; a tool that "
            "sends secrets or signs its requests must list the hosts it may call in "
            "request.allowed_hosts",
            id="host-from-input-with-secrets",
        ),
        pytest.param(
            {
                "allowed_hosts": ["api.example.com"],
                "on_cancel": {"url": "https://elsewhere.example/cancel"},
            },
            "tools[0].request: Value error, allowed_hosts: the on_cancel.url's host "
            "'elsewhere.example' is not among them",
            id="outside-allowed-hosts",
        ),
    ],
)
async def test_an_on_cancel_the_request_rules_refuse_is_422(
    fabric: Fabric, request_fields: dict[str, Any], message: str
) -> None:
    tool = booking_tool("https://api.example.com")
    tool["request"] |= request_fields

    response = await fabric.registry.post(f"/v1/agents/{AGENT}/tools", json={"tools": [tool]})

    assert response.status_code == 422
    assert response.json()["error"]["message"] == message


async def test_a_tools_on_cancel_is_shown_as_declared(fabric: Fabric, api: RecordingApi) -> None:
    await fabric.register(AGENT, cancellable(api))

    shown = await fabric.registry.get(f"/v1/agents/{AGENT}/tools/CheckIn")

    assert shown.json()["request"]["on_cancel"] == {
        "url": f"{api.url}/cancel/{{{{call.id}}}}",
        "method": "POST",
    }
