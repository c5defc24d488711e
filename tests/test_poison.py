"""Inputs that used to come back forever: each ends at once, and the next call still works."""

import json
import secrets
from typing import Any

import pytest
from pydantic import BaseModel

from shared.contract import subjects
from shared.contract.json_depth import MAX_DEPTH, shallow
from shared.fabric.messaging import MESSAGE_DEPTH, Undecodable, decode, loose_fields
from tests.support.api import RecordingApi
from tests.support.fabric import Fabric
from tests.test_spine import AGENT, booking_tool, error_result, events_of, new_call, place

ONE_SECOND = 1.0


async def publish_raw(fabric: Fabric, conversation_id: str, body: bytes) -> None:
    await fabric.nc.jetstream().publish(
        subjects.calls(conversation_id), body, headers={"Nats-Msg-Id": secrets.token_hex(8)}
    )


async def error_for(fabric: Fabric, conversation_id: str, call_id: str) -> dict[str, Any]:
    result = await fabric.runtime.wait_for(conversation_id, "result", call_id, ONE_SECOND)
    assert result["status"] == "error", result
    return result


async def next_call_succeeds(fabric: Fabric) -> None:
    assert (await place(fabric, new_call()))["status"] == "success"


@pytest.fixture
async def ready(fabric: Fabric, api: RecordingApi) -> Fabric:
    api.reply("POST", "/book", json={"success": True, "stylist_name": "Ana"})
    await fabric.register(AGENT, booking_tool(api.url))
    return fabric


@pytest.mark.parametrize("field", ["call_id", "tool"])
async def test_a_lone_surrogate_gets_an_error_result(ready: Fabric, field: str) -> None:
    call = new_call()
    body = json.dumps(call).replace(f'"{call[field]}"', f'"{call[field]}\\ud800"', 1)
    await ready.runtime.listen(call["conversation_id"])

    await publish_raw(ready, call["conversation_id"], body.encode())

    call_id = call["call_id"] + ("\ufffd" if field == "call_id" else "")
    result = await error_for(ready, call["conversation_id"], call_id)
    assert result["error"]["code"] == "invalid_arguments"
    assert result["error"]["message"].startswith("The tool call could not be read")
    await next_call_succeeds(ready)


def with_deep_arguments(call: dict[str, Any], depth: int) -> bytes:
    """``call`` with its arguments ``depth`` levels deep (written by hand: json.dumps recurses)."""
    deep = "[" * (depth - 1) + "]" * (depth - 1)
    body = json.dumps(call).replace('"arguments": {', f'"arguments": {{"deep": {deep}, ', 1)
    return body.encode()


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 1_000, 100_000])
async def test_arguments_nested_past_the_limit_get_an_error_result(
    ready: Fabric, depth: int
) -> None:
    call = new_call()
    await ready.runtime.listen(call["conversation_id"])

    await publish_raw(ready, call["conversation_id"], with_deep_arguments(call, depth))

    await error_for(ready, call["conversation_id"], call["call_id"])
    assert events_of(ready, call) == [
        error_result(
            call,
            "invalid_arguments",
            "The tool call could not be read: invalid ToolCall: arguments: Value error, "
            f"the arguments object is nested deeper than the limit of {MAX_DEPTH} levels.",
        )
    ]
    # Answered, so not set aside: nothing waits in the dead letters for ops.
    dead = await ready.nc.jetstream().stream_info(subjects.DEAD_STREAM)
    assert dead.state.messages == 0
    await next_call_succeeds(ready)


async def test_arguments_at_the_depth_limit_are_accepted(ready: Fabric) -> None:
    call = new_call()
    await ready.runtime.listen(call["conversation_id"])

    await publish_raw(ready, call["conversation_id"], with_deep_arguments(call, MAX_DEPTH))

    result = await ready.runtime.wait_for(call["conversation_id"], "result", call["call_id"])
    assert result["status"] == "success", result


def test_past_a_depth_what_is_nested_deeper_reads_as_null() -> None:
    assert shallow(b'{"a": "[[[", "b": [[[1]], [2]], "c": 3}', 2) == (
        b'{"a": "[[[", "b": [null, null], "c": 3}'
    )
    assert shallow(b'{"a": [[[', 2) == b'{"a": [null'


def test_a_message_too_deep_to_read_is_undecodable_whatever_its_fields_allow() -> None:
    class Anything(BaseModel):
        value: Any

    deep = b'{"value": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"

    with pytest.raises(Undecodable) as raised:
        decode(Anything, deep)

    limit = f"the message is nested deeper than the limit of {MESSAGE_DEPTH} levels"
    assert str(raised.value) == f"invalid Anything: body: {limit}"
    assert loose_fields(b'{"call_id": "c-1", "deep": ' + deep + b"}")["call_id"] == "c-1"


async def test_a_call_too_large_to_carry_gets_an_error_and_no_pending(ready: Fabric) -> None:
    call = new_call()
    call["arguments"]["notes"] = "x" * 7_500_000
    await ready.runtime.listen(call["conversation_id"])

    await publish_raw(ready, call["conversation_id"], json.dumps(call).encode())

    result = await error_for(ready, call["conversation_id"], call["call_id"])
    assert result["error"]["code"] == "invalid_arguments"
    assert "too large" in result["error"]["message"]
    kinds = [e["_kind"] for e in ready.runtime.events[call["conversation_id"]]]
    assert kinds == ["result"]
    await next_call_succeeds(ready)


@pytest.mark.parametrize(
    ("request_spec", "service", "code"),
    [
        # Octal loopback: allowed here (the tests allow 127.0.0.1), and nothing listens on 80.
        ({"url": "http://0177.0.0.1/book"}, "Haircut", "connection_error"),
        ({"headers": {"X-Name": "{{input.service}}"}}, "Zoë", None),
        ({"headers": {"X-Name": "{{input.service}}"}}, "a\u0000b", "invalid_arguments"),
        ({"headers": {"X-Name": "{{input.service}}"}}, "a\r\nX-Evil: 1", "invalid_arguments"),
        ({"headers": {"X-{{input.service}}": "1"}}, "a\r\nb", "invalid_arguments"),
    ],
)
async def test_requests_the_http_client_would_refuse_end_the_call_at_once(
    fabric: Fabric,
    api: RecordingApi,
    request_spec: dict[str, Any],
    service: str,
    code: str | None,
) -> None:
    api.reply("POST", "/book", json={"success": True, "stylist_name": "Ana"})
    poisoned = {**booking_tool(api.url, **request_spec), "name": "Poisoned"}
    await fabric.register(AGENT, booking_tool(api.url), poisoned)
    call = new_call(
        "Poisoned", arguments={"date": "2024-04-20", "time": "10:00", "service": service}
    )
    await fabric.runtime.listen(call["conversation_id"])

    await fabric.runtime.call(call)

    result = await fabric.runtime.wait_for(
        call["conversation_id"], "result", call["call_id"], ONE_SECOND
    )
    assert (result["error"] or {}).get("code") == code, result
    await next_call_succeeds(fabric)


async def test_a_control_character_in_a_call_id_gets_an_error_result(ready: Fabric) -> None:
    call = new_call(call_id=f"call-{secrets.token_hex(2)}\u0000x")
    await ready.runtime.listen(call["conversation_id"])

    await publish_raw(ready, call["conversation_id"], json.dumps(call).encode())

    result = await error_for(ready, call["conversation_id"], call["call_id"])
    assert result["error"]["code"] == "invalid_arguments"
    assert "call_id" in result["error"]["message"]
    await next_call_succeeds(ready)
