"""A tool call end to end: runtime -> NATS -> five services -> HTTP API -> runtime.

Given a tool registered over REST and a real API on loopback, when a runtime
publishes a ToolCall, then it hears exactly one pending and then exactly one
result, the API receives exactly the request the tool describes, and billing
has the call once.
"""

import json
import secrets
from typing import Any

import pytest

from tests.support.api import RecordingApi
from tests.support.fabric import SECRETS, Fabric

AGENT = "salon-bot"
CONTEXT = {"From": "+12223334444", "To": "+15556667777", "Session": "s-1"}
VOLATILE = {"at", "duration_ms", "trace_id", "_received"}


def booking_tool(api_url: str, **overrides: Any) -> dict[str, Any]:
    tool = {
        "name": "BookAppointment",
        "description": "Books an appointment",
        "parameters": {
            "type": "object",
            "required": ["date", "time"],
            "properties": {
                "date": {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$"},
                "time": {"type": "string"},
                "service": {"type": "string"},
            },
        },
        "context_parameters": [{"name": "From"}],
        "request": {
            "url": f"{api_url}/book",
            "method": "POST",
            "headers": {"Authorization": "Bearer {{secrets.BOOKING_KEY}}"},
            "query": {"source": "voice", "conv": "{{conversation.id}}"},
            "body": {
                "date": "{{input.date}}",
                "time": "{{input.time}}",
                "service": "{{input.service}}",
                "phone": "{{context.From}}",
                "note": "call {{call.id}} for {{input.service}}",
            },
        },
        "speech": {"on_send": "One moment while I book that."},
        "response": {"variables": {"stylist_name": "$.stylist_name", "booked": "$.success"}},
    }
    tool["request"].update(overrides)  # type: ignore[attr-defined]
    return tool


def new_call(tool: str = "BookAppointment", **fields: Any) -> dict[str, Any]:
    call = {
        "call_id": f"call-{secrets.token_hex(4)}",
        "conversation_id": f"conv-{secrets.token_hex(4)}",
        "agent_id": AGENT,
        "tool": tool,
        "arguments": {"date": "2024-04-20", "time": "10:00 AM", "service": "Haircut"},
        "context": CONTEXT,
    }
    call.update(fields)
    return call


async def place(fabric: Fabric, call: dict[str, Any], **publish: Any) -> dict[str, Any]:
    """Publish a call as a runtime would and return its result event."""
    await fabric.runtime.listen(call["conversation_id"])
    await fabric.runtime.call(call, **publish)
    return await fabric.runtime.wait_for(call["conversation_id"], "result", call["call_id"])


def events_of(fabric: Fabric, call: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {k: v for k, v in e.items() if k not in VOLATILE}
        for e in fabric.runtime.events[call["conversation_id"]]
        if e.get("call_id") == call["call_id"]
    ]


def pending(
    call: dict[str, Any], speech: str | None = "One moment while I book that.", speak: bool = True
) -> dict[str, Any]:
    return {
        "call_id": call["call_id"],
        "conversation_id": call["conversation_id"],
        "tool": call["tool"],
        "status": "pending",
        "speak": speak,
        "speech": speech,
        "muted": False,
        "_kind": "pending",
    }


def error_result(
    call: dict[str, Any],
    code: str,
    message: str,
    details: Any = None,
    http_status: int | None = None,
    attempts: int = 0,
) -> dict[str, Any]:
    return {
        "call_id": call["call_id"],
        "conversation_id": call["conversation_id"],
        "tool": call["tool"],
        "status": "error",
        "result": None,
        "agent_message": None,
        "speak": True,
        "variables": {},
        "error": {"code": code, "message": message, "details": details},
        "end_conversation": False,
        "http_status": http_status,
        "attempts": attempts,
        "replay": False,
        "replay_attempt": None,
        "_kind": "result",
    }


async def test_success_sends_the_exact_request_and_maps_variables(
    fabric: Fabric, api: RecordingApi
) -> None:
    api.reply(
        "POST",
        "/book",
        json={"success": True, "stylist_name": "Ana", "agent_message": "Booked with Ana at ten."},
    )
    await fabric.register(AGENT, booking_tool(api.url))
    call = new_call()

    await place(fabric, call)

    assert events_of(fabric, call) == [
        pending(call),
        {
            "call_id": call["call_id"],
            "conversation_id": call["conversation_id"],
            "tool": "BookAppointment",
            "status": "success",
            "result": {
                "success": True,
                "stylist_name": "Ana",
                "agent_message": "Booked with Ana at ten.",
            },
            "agent_message": "Booked with Ana at ten.",
            "speak": True,
            "variables": {"stylist_name": "Ana", "booked": True},
            "error": None,
            "end_conversation": False,
            "http_status": 200,
            "attempts": 1,
            "replay": False,
            "replay_attempt": None,
            "_kind": "result",
        },
    ]
    [received] = api.received
    assert (received.method, received.path) == ("POST", "/book")
    assert received.query == [("source", "voice"), ("conv", call["conversation_id"])]
    assert (
        received.body
        == json.dumps(
            {
                "date": "2024-04-20",
                "time": "10:00 AM",
                "service": "Haircut",
                "phone": "+12223334444",
                "note": f"call {call['call_id']} for Haircut",
            },
            separators=(",", ":"),
        ).encode()
    )
    headers = {k.lower(): v for k, v in received.headers}
    assert headers["authorization"] == f"Bearer {SECRETS['BOOKING_KEY']}"
    assert headers["content-type"] == "application/json"
    assert headers["accept"] == "application/json"
    assert headers["idempotency-key"] == call["call_id"]
    assert headers["content-length"] == str(len(received.body))
    assert headers["traceparent"].startswith("00-")


async def test_get_sends_arguments_as_query_and_leaves_out_missing_keys(
    fabric: Fabric, api: RecordingApi
) -> None:
    api.reply("GET", "/slots", json={"slots": ["10:00"]})
    tool = booking_tool(
        api.url,
        url=f"{api.url}/slots",
        method="GET",
        query=None,
        body=None,
        headers={"X-Service": "{{input.service}}"},
    )
    await fabric.register(AGENT, tool)
    call = new_call(arguments={"date": "2024-04-20", "time": "10:00 AM"})

    result = await place(fabric, call)

    assert result["status"] == "success"
    [received] = api.received
    assert received.query == [
        ("date", "2024-04-20"),
        ("time", "10:00 AM"),
        ("From", "+12223334444"),
    ]
    assert received.body == b""
    assert "x-service" not in {k.lower() for k, _ in received.headers}


async def test_unknown_agent_gets_only_an_error_result(fabric: Fabric) -> None:
    call = new_call(agent_id="nobody")

    await place(fabric, call)

    assert events_of(fabric, call) == [
        error_result(call, "unknown_agent", "There is no agent 'nobody' configured for tools.")
    ]


async def test_unknown_tool_gets_only_an_error_result(fabric: Fabric, api: RecordingApi) -> None:
    await fabric.register(AGENT, booking_tool(api.url))
    call = new_call(tool="Teleport")

    await place(fabric, call)

    assert events_of(fabric, call) == [
        error_result(call, "unknown_tool", "The tool 'Teleport' does not exist for this agent.")
    ]


async def test_invalid_arguments_name_the_field_and_why(fabric: Fabric, api: RecordingApi) -> None:
    await fabric.register(AGENT, booking_tool(api.url))
    call = new_call(arguments={"date": "Saturday"})

    await place(fabric, call)

    assert events_of(fabric, call) == [
        error_result(
            call,
            "invalid_arguments",
            "The arguments for BookAppointment are not valid: 'time' is a required property; "
            "'date' 'Saturday' does not match '^\\\\d{4}-\\\\d{2}-\\\\d{2}$'. Ask the caller for "
            "the missing or corrected details and try again.",
            [
                {"path": "", "message": "'time' is a required property", "validator": "required"},
                {
                    "path": "date",
                    "message": "'Saturday' does not match '^\\\\d{4}-\\\\d{2}-\\\\d{2}$'",
                    "validator": "pattern",
                },
            ],
        )
    ]
    assert api.received == []


async def test_missing_context_parameter(fabric: Fabric, api: RecordingApi) -> None:
    await fabric.register(AGENT, booking_tool(api.url))
    call = new_call(context={"To": "+15556667777"})

    await place(fabric, call)

    assert events_of(fabric, call) == [
        error_result(
            call,
            "missing_context_parameter",
            "The call is missing 'From', which BookAppointment needs from the call context.",
            {"parameter": "From"},
        )
    ]


async def test_timeout_is_bounded_by_the_calls_deadline(fabric: Fabric, api: RecordingApi) -> None:
    api.reply("POST", "/book", json={"success": True}, delay_s=5)
    await fabric.register(AGENT, booking_tool(api.url))
    call = new_call(deadline_ms=300)

    result = await place(fabric, call)

    assert events_of(fabric, call) == [
        pending(call),
        error_result(
            call,
            "timeout",
            "The BookAppointment service did not answer within 0.3 seconds. "
            "Tell the caller it is taking too long and offer to try again.",
            {"timeout_s": 0.3},
            attempts=1,
        ),
    ]
    # The API's 5 s were not waited for (a loose bound: a loaded CI machine adds seconds).
    assert result["duration_ms"] < 4000


async def test_connection_error(fabric: Fabric, api: RecordingApi) -> None:
    closed = "http://127.0.0.1:9"  # discard port: nothing listens
    await fabric.register(AGENT, booking_tool(api.url, url=f"{closed}/book"))
    call = new_call()

    await place(fabric, call)

    assert events_of(fabric, call)[1] == error_result(
        call,
        "connection_error",
        "The BookAppointment service could not be reached. Tell the "
        "caller there is a technical problem and offer to try again later.",
        {"request_sent": False},  # refused: the API never saw it, so it is safe to send again
        attempts=1,
    )


async def test_http_error_tells_the_llm_what_to_say(fabric: Fabric, api: RecordingApi) -> None:
    api.reply("POST", "/book", status=503, json={"error": "maintenance"})
    await fabric.register(AGENT, booking_tool(api.url))
    call = new_call()

    await place(fabric, call)

    assert events_of(fabric, call)[1] == error_result(
        call,
        "http_error",
        "The BookAppointment service had a problem. Tell the caller to try "
        "again in a few minutes. (HTTP 503)",
        {"status": 503, "body": {"error": "maintenance"}},
        http_status=503,
        attempts=1,
    )


async def test_a_body_that_is_not_json_is_an_invalid_response(
    fabric: Fabric, api: RecordingApi
) -> None:
    api.reply("POST", "/book", text="<html>oops</html>")
    await fabric.register(AGENT, booking_tool(api.url))
    call = new_call()

    await place(fabric, call)

    assert events_of(fabric, call)[1] == error_result(
        call,
        "invalid_response",
        "The BookAppointment service gave an answer that could not "
        "be read. Tell the caller there is a technical problem and offer to try again later.",
        {"content_type": "text/plain; charset=utf-8", "body": "<html>oops</html>"},
        http_status=200,
        attempts=1,
    )


async def test_private_destinations_are_blocked(fabric: Fabric, api: RecordingApi) -> None:
    await fabric.register(AGENT, booking_tool(api.url, url="http://10.255.255.1/book"))
    call = new_call()

    await place(fabric, call)

    assert events_of(fabric, call)[1] == error_result(
        call,
        "blocked_destination",
        "This tool points at an address it is not allowed to "
        "call. Tell the caller the action is not available right now.",
        {"host": "10.255.255.1", "address": "10.255.255.1"},
    )


@pytest.mark.parametrize("again", ["same message id", "new message id"])
async def test_a_call_published_twice_runs_once(
    fabric: Fabric, api: RecordingApi, again: str
) -> None:
    api.reply("POST", "/book", json={"success": True, "stylist_name": "Ana"})
    await fabric.register(AGENT, booking_tool(api.url))
    call = new_call()

    await place(fabric, call)
    await fabric.runtime.call(
        call, msg_id=call["call_id"] if again == "same message id" else f"{call['call_id']}-retry"
    )
    await fabric.drained()

    kinds = [e["_kind"] for e in events_of(fabric, call)]
    assert kinds == ["pending", "result"]
    assert len(api.received) == 1
    usage = (await fabric.billing.get(f"/v1/usage/conversations/{call['conversation_id']}")).json()
    assert [record["call_id"] for record in usage["calls"]] == [call["call_id"]]
