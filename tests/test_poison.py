"""Inputs that used to come back forever: each ends at once, and the next call still works."""

import json
import secrets
from typing import Any

import pytest

from shared import subjects
from shared.messaging import REASON_HEADER
from tests.support.api import RecordingApi
from tests.support.fabric import Fabric
from tests.test_spine import AGENT, booking_tool, new_call, place

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


async def test_a_call_nested_too_deep_to_read_is_set_aside_at_once(ready: Fabric) -> None:
    call = new_call()
    deep = "[" * 1000 + "]" * 1000
    body = json.dumps(call).replace('"arguments": {', f'"arguments": {{"deep": {deep}, ', 1)
    dead = await ready.nc.subscribe(subjects.dead("calls"))

    await publish_raw(ready, call["conversation_id"], body.encode())

    # Not even its call id can be read back: a dead letter, with why, for ops.
    letter = await dead.next_msg(timeout=ONE_SECOND)
    assert letter.data == body.encode()
    assert "recursion limit" in (letter.headers or {})[REASON_HEADER]
    await next_call_succeeds(ready)


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
