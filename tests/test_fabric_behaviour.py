"""The fabric under conditions a production runtime meets: ends, bursts, accounts, garbage."""

import asyncio
import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from shared.calls.metering import count_json_tokens
from tests.support.api import RecordingApi
from tests.support.fabric import Fabric
from tests.test_spine import (
    AGENT,
    booking_tool,
    error_result,
    events_of,
    new_call,
    pending,
    place,
)


async def test_ending_the_conversation_cancels_its_in_flight_calls(
    fabric: Fabric, api: RecordingApi
) -> None:
    api.reply("POST", "/book", json={"success": True}, delay_s=30)
    await fabric.register(AGENT, booking_tool(api.url))
    call = new_call()
    await fabric.runtime.listen(call["conversation_id"])

    await fabric.runtime.call(call)
    await api.wait_for(1)
    await fabric.runtime.end(call["conversation_id"])
    await fabric.runtime.wait_for(call["conversation_id"], "result", call["call_id"])

    assert events_of(fabric, call) == [
        pending(call),
        error_result(
            call, "cancelled", "The conversation ended before the action finished.", attempts=0
        ),
    ]


async def test_many_calls_are_in_flight_at_once(fabric: Fabric, api: RecordingApi) -> None:
    calls = [new_call() for _ in range(20)]
    everyone_waiting = asyncio.Event()

    async def barrier(_: web.Request) -> web.StreamResponse:
        # Answers only once all 20 requests are open together: serial execution would time out.
        if len(api.received) == len(calls):
            everyone_waiting.set()
        await everyone_waiting.wait()
        return web.json_response({"success": True})

    api.route("POST", "/book", barrier)
    await fabric.register(AGENT, booking_tool(api.url))
    for call in calls:
        await fabric.runtime.listen(call["conversation_id"])
        await fabric.runtime.call({**call, "deadline_ms": 10_000})

    results = [
        await fabric.runtime.wait_for(c["conversation_id"], "result", c["call_id"]) for c in calls
    ]

    assert [r["status"] for r in results] == ["success"] * len(calls)


async def test_usage_is_billed_to_the_agents_account_with_real_token_counts(
    fabric: Fabric, api: RecordingApi
) -> None:
    answer = {"success": True, "stylist_name": "Ana"}
    api.reply("POST", "/book", json=answer)
    await fabric.register(AGENT, booking_tool(api.url))
    assert (
        await fabric.registry.put(f"/v1/agents/{AGENT}", json={"account_id": "acme"})
    ).status_code == 200
    call = new_call()
    await fabric.runtime.listen(call["conversation_id"])

    await fabric.runtime.call(call)
    await fabric.runtime.wait_for(call["conversation_id"], "result", call["call_id"])
    await fabric.drained()

    tokens_in, tokens_out = count_json_tokens(call["arguments"]), count_json_tokens(answer)
    usage = (await fabric.billing.get("/v1/usage", params={"account_id": "acme"})).json()
    assert usage == {
        "account_id": "acme",
        "calls": 1,
        "errors": 0,
        "replays": 0,
        "input_tokens": tokens_in,
        "output_tokens": tokens_out,
        "units": round(0.1 + 5 * (tokens_in + tokens_out) / 1000, 6),
    }


async def test_broken_calls_get_a_clear_error_and_others_go_on(
    fabric: Fabric, api: RecordingApi
) -> None:
    api.reply("POST", "/book", json={"success": True})
    await fabric.register(AGENT, booking_tool(api.url))
    good = new_call()
    conversation = good["conversation_id"]
    await fabric.runtime.listen(conversation)
    js = fabric.nc.jetstream()
    dead = await js.pull_subscribe("midcall.dead.calls", stream="MIDCALL_DEAD")

    await js.publish(f"midcall.calls.{conversation}", b"\x00 not json")
    broken = {"call_id": "broken-1", "conversation_id": conversation, "tool": "BookAppointment"}
    await js.publish(f"midcall.calls.{conversation}", json.dumps(broken).encode())
    await fabric.runtime.call(good)
    result = await fabric.runtime.wait_for(conversation, "result", good["call_id"])

    assert result["status"] == "success"
    rejected = await fabric.runtime.wait_for(conversation, "result", "broken-1")
    assert rejected["error"] == {
        "code": "invalid_arguments",
        "message": "The tool call could not be read: invalid ToolCall: agent_id: Field required.",
        "details": None,
    }
    [letter] = await dead.fetch(1, timeout=5)
    assert letter.data == b"\x00 not json"
    assert letter.headers is not None
    assert letter.headers["Midcall-Reason"].startswith("The tool call could not be read")


async def test_response_variables_are_kept_per_conversation_for_prompts(
    fabric: Fabric, api: RecordingApi
) -> None:
    api.reply("POST", "/book", json={"success": True, "stylist_name": "Ana"})
    await fabric.register(AGENT, booking_tool(api.url))
    first = new_call()
    conversation = first["conversation_id"]
    api_second = {
        **booking_tool(api.url),
        "name": "Price",
        "response": {"variables": {"order_price": "$.price"}},
    }
    api.reply("POST", "/price", json={"price": 42})
    api_second["request"] = {**api_second["request"], "url": f"{api.url}/price"}
    await fabric.register(AGENT, api_second)
    await fabric.runtime.listen(conversation)

    await fabric.runtime.call(first)
    await fabric.runtime.wait_for(conversation, "result", first["call_id"])
    rendered = (
        await fabric.registry.post(
            f"/v1/conversations/{conversation}/render",
            json={"template": "{{stylist_name}} costs {{order_price}}"},
        )
    ).json()
    second = {**new_call(tool="Price"), "conversation_id": conversation}
    await fabric.runtime.call(second)
    await fabric.runtime.wait_for(conversation, "result", second["call_id"])
    variables = (await fabric.registry.get(f"/v1/conversations/{conversation}/variables")).json()

    assert rendered == {
        "conversation_id": conversation,
        "text": "Ana costs ",
        "unset": ["order_price"],
    }
    assert variables == {
        "conversation_id": conversation,
        "variables": {"stylist_name": "Ana", "booked": True, "order_price": 42},
    }


async def result_within_a_second(
    fabric: Fabric, want: Callable[[dict[str, Any]], bool], seconds: float = 1.0
) -> dict[str, Any]:
    """Call until the result satisfies ``want``: registry changes must apply within 1 s."""
    async with asyncio.timeout(seconds):
        while True:
            result = await place(fabric, new_call())
            if want(result):
                return result


async def test_registry_changes_reach_the_dispatchers_within_a_second(
    fabric: Fabric, api: RecordingApi
) -> None:
    api.reply("POST", "/v1", json={"version": 1})
    api.reply("POST", "/v2", json={"version": 2})
    await fabric.register(AGENT, booking_tool(api.url, url=f"{api.url}/v1"))
    assert (await place(fabric, new_call()))["result"] == {"version": 1}

    await fabric.register(AGENT, booking_tool(api.url, url=f"{api.url}/v2"))
    await result_within_a_second(fabric, lambda r: r["result"] == {"version": 2})
    assert (
        await fabric.registry.delete(f"/v1/agents/{AGENT}/tools/BookAppointment")
    ).status_code == 204
    gone = await result_within_a_second(fabric, lambda r: r["status"] == "error")

    assert gone["error"]["code"] == "unknown_tool"
