"""Each platform's documents, end to end: NATS in, the API on loopback, the result event out.

Given a platform's own example document registered in its dialect, when a
runtime calls the tool, then the API receives exactly the request that
platform documents and the runtime hears exactly the result it documents.
"""

import base64
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

from aiohttp import web
from standardwebhooks.webhooks import Webhook

from tests.support.api import RecordingApi
from tests.support.fabric import SECRETS, Fabric
from tests.test_spine import VOLATILE, error_result, new_call, pending

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
AGENT = "migrated-bot"


def example(name: str, **replace: str) -> str:
    text = (EXAMPLES / name).read_text()
    for old, new in replace.items():
        text = text.replace(old, new)
    return text


async def call_tool(
    fabric: Fabric, tool: str, arguments: dict[str, Any], **fields: Any
) -> tuple[dict[str, Any], ...]:
    call = new_call(tool=tool, agent_id=AGENT, arguments=arguments, **fields)
    await fabric.runtime.listen(call["conversation_id"])
    await fabric.runtime.call(call)
    await fabric.runtime.wait_for(call["conversation_id"], "result", call["call_id"])
    events = tuple(
        {k: v for k, v in e.items() if k not in VOLATILE}
        for e in fabric.runtime.events[call["conversation_id"]]
        if e.get("call_id") == call["call_id"]
    )
    return (call, *events)


def success(
    call: dict[str, Any],
    result: Any,
    agent_message: str | None = None,
    variables: dict[str, Any] | None = None,
    attempts: int = 1,
) -> dict[str, Any]:
    return {
        "call_id": call["call_id"],
        "conversation_id": call["conversation_id"],
        "tool": call["tool"],
        "status": "success",
        "result": result,
        "agent_message": agent_message,
        "speak": True,
        "variables": variables or {},
        "error": None,
        "end_conversation": False,
        "http_status": 200,
        "attempts": attempts,
        "replay": False,
        "replay_attempt": None,
        "_kind": "result",
    }


# -- vocode ---------------------------------------------------------------------------------

VOCODE_SECRET = json.loads(example("vocode_meeting_booking.json"))["signature_secret"]


async def vocode_receiver(request: web.Request) -> web.StreamResponse:
    """Vocode's documented receiver check, as a customer's API runs it."""
    payload = await request.json()
    digest = hmac.new(
        base64.b64decode(VOCODE_SECRET), json.dumps(payload).encode(), hashlib.sha256
    ).digest()
    if not hmac.compare_digest(base64.b64decode(request.headers["x-vocode-signature"]), digest):
        return web.json_response({"detail": "Signature verification failed"}, status=401)
    return web.json_response(
        {
            "result": {"success": True},
            "agent_message": "I've set up a calendar appointment at 10:30am "
            "tomorrow for 30 minutes",
        }
    )


async def test_vocode_external_action(fabric: Fabric, api: RecordingApi) -> None:
    api.route("POST", "/booking", vocode_receiver)
    await fabric.register_document(
        AGENT, "vocode", example("vocode_meeting_booking.json", **{"http://example.com": api.url})
    )
    arguments = {"length": "30m", "time": "10:30am"}

    call, first, last = await call_tool(fabric, "Meeting_Booking_Assistant", arguments)

    assert first == pending(call, speech=None)
    assert last == success(
        call,
        {"success": True},
        "I've set up a calendar appointment at 10:30am tomorrow for 30 minutes",
    )
    [received] = api.received
    assert received.body == json.dumps({"payload": arguments}).encode()
    assert received.header("accept") == "application/json"
    assert received.header("content-type") == "application/json"


async def test_vocode_muted_and_unanswered_connections_are_retried_twice(
    fabric: Fabric, api: RecordingApi
) -> None:
    document = json.loads(example("vocode_meeting_booking.json"))
    document.update(url="http://127.0.0.1:9/booking", processing_mode="muted")
    await fabric.register_document(AGENT, "vocode", json.dumps(document))

    call, first, last = await call_tool(
        fabric, "Meeting_Booking_Assistant", {"length": "1hr", "time": "11:00am"}
    )

    assert first == {**pending(call, speech=None), "muted": True}
    assert (last["error"]["code"], last["attempts"]) == ("connection_error", 3)


async def test_vocode_requires_its_response_envelope(fabric: Fabric, api: RecordingApi) -> None:
    api.reply("POST", "/booking", json={"success": True})  # no "result"
    await fabric.register_document(
        AGENT, "vocode", example("vocode_meeting_booking.json", **{"http://example.com": api.url})
    )

    _call, _, last = await call_tool(
        fabric, "Meeting_Booking_Assistant", {"length": "30m", "time": "10:30am"}
    )

    assert last["error"]["code"] == "invalid_response"
    assert last["http_status"] == 200


# -- bland ----------------------------------------------------------------------------------


async def test_bland_custom_tool(fabric: Fabric, api: RecordingApi) -> None:
    api.reply("POST", "/book-appointment", json={"success": True, "stylist_name": "Ana"})
    await fabric.register_document(
        AGENT, "bland", example("bland_book_appointment.json", **{"https://your-api.com": api.url})
    )
    arguments = {
        "speech": "Got it - one second while I book your appointment.",
        "date": "2024-04-20",
        "time": "10:00 AM",
        "service": "Haircut",
    }

    call, first, last = await call_tool(fabric, "BookAppointment", arguments)

    assert first == pending(call, speech="Got it - one second while I book your appointment.")
    variables = {"succesfully_booked_slot": True, "stylist_name": "Ana"}
    assert last == success(call, {"success": True, "stylist_name": "Ana"}, None, variables)
    [received] = api.received
    assert received.body == b'{"date":"2024-04-20","time":"10:00 AM","service":"Haircut"}'
    assert received.header("authorization") == "YOUR_API_KEY"
    kept = await fabric.registry.get(f"/v1/conversations/{call['conversation_id']}/variables")
    assert kept.json()["variables"] == variables


async def test_bland_loose_properties_never_reject_the_llms_arguments(
    fabric: Fabric, api: RecordingApi
) -> None:
    api.reply("POST", "/book-appointment", json={"success": False})
    await fabric.register_document(
        AGENT, "bland", example("bland_book_appointment.json", **{"https://your-api.com": api.url})
    )

    _call, first, last = await call_tool(
        fabric, "BookAppointment", {"date": 20240420, "time": ["ten"]}
    )

    assert first["status"] == "pending"
    assert first["speech"] is None  # no speech argument and no static speech
    assert last["status"] == "success"
    assert last["variables"] == {"succesfully_booked_slot": False}


# -- aivoco ---------------------------------------------------------------------------------


async def test_aivoco_get_sends_query_parameters(fabric: Fabric, api: RecordingApi) -> None:
    api.reply("GET", "/v1/current.json", json={"temp_c": 20})
    await fabric.register_document(
        AGENT, "aivoco", example("aivoco_functions.json", **{"https://api.weatherapi.com": api.url})
    )

    call, first, last = await call_tool(
        fabric, "get_weather", {"location": "London", "units": "celsius"}
    )

    assert first == pending(call, speech=None, speak=False)
    assert last == success(call, {"temp_c": 20})
    [received] = api.received
    assert received.query == [("location", "London"), ("units", "celsius")]
    assert received.body == b""


async def test_aivoco_post_sends_a_json_body_and_fills_header_placeholders(
    fabric: Fabric, api: RecordingApi
) -> None:
    api.reply("POST", "/appointments", json={"id": 7})
    document = json.loads(
        example("aivoco_functions.json", **{"https://api.yourbooking.com": api.url})
    )
    booking = document["functions"][1]
    booking["headers"]["X-Customer"] = "{customer_name}"
    await fabric.register_document(AGENT, "aivoco", json.dumps(booking))
    arguments = {
        "customer_name": "Ana Lu",
        "date": "2024-04-20",
        "time": "10:00",
        "service": "checkup",
    }

    call, _, last = await call_tool(fabric, "book_appointment", arguments)

    assert last == success(call, {"id": 7})
    [received] = api.received
    assert received.body == json.dumps(arguments, separators=(",", ":")).encode()
    assert received.header("x-customer") == "Ana Lu"
    assert received.header("x-api-key") == "YOUR_BOOKING_API_KEY"


async def test_aivoco_timeout_and_http_errors(fabric: Fabric, api: RecordingApi) -> None:
    api.reply("GET", "/v1/current.json", json={}, delay_s=5)
    await fabric.register_document(
        AGENT, "aivoco", example("aivoco_functions.json", **{"https://api.weatherapi.com": api.url})
    )

    _, _, last = await call_tool(fabric, "get_weather", {"location": "Paris"}, deadline_ms=200)

    assert last["error"] == {
        "code": "timeout",
        "message": "Function timed out after 30 seconds",
        "details": {"timeout_s": 0.2},
    }
    api.reply("GET", "/v1/current.json", status=502, json={"error": "upstream"})
    _call, _, last = await call_tool(fabric, "get_weather", {"location": "Paris"})
    assert (last["error"]["code"], last["http_status"]) == ("http_error", 502)


# -- xml ------------------------------------------------------------------------------------

CONTEXT = {"From": "+12223334444", "To": "+15556667777", "Session": "s-1", "Domain": "acme.example"}


async def test_xml_tool_binds_its_parameters_from_the_call_context(
    fabric: Fabric, api: RecordingApi
) -> None:
    api.reply("POST", "/contactLookUp", json={"name": "Ana"})
    await fabric.register_document(
        AGENT, "xml", example("xml_contact_lookup.xml", **{"https://example.com": api.url})
    )

    call, first, last = await call_tool(fabric, "contactLookUp", {}, context=CONTEXT)

    assert first == pending(call, speech=None, speak=False)
    assert last == success(call, {"name": "Ana"})
    [received] = api.received
    assert received.body == json.dumps(CONTEXT, separators=(",", ":")).encode()


async def test_xml_missing_parameter_ends_the_session(fabric: Fabric, api: RecordingApi) -> None:
    await fabric.register_document(
        AGENT, "xml", example("xml_contact_lookup.xml", **{"https://example.com": api.url})
    )

    call, only = await call_tool(
        fabric, "contactLookUp", {}, context={"From": "+1222", "To": "+1555", "Session": "s"}
    )

    assert only == {
        **error_result(
            call,
            "missing_context_parameter",
            "The call is missing 'Domain', which contactLookUp needs from the call context.",
            {"parameter": "Domain"},
        ),
        "end_conversation": True,
    }
    assert api.received == []


async def test_xml_parameters_are_typed(fabric: Fabric, api: RecordingApi) -> None:
    api.reply("POST", "/typed", json={})
    await fabric.register_document(
        AGENT,
        "xml",
        f"""
        <Tool name="typed" url="{api.url}/typed">
          <Parameter name="Attempts" type="integer"/>
          <Parameter name="Score" type="number"/>
          <Parameter name="Vip" type="boolean"/>
          <Parameter name="Tier" type="enum" values="gold,silver"/>
          <Parameter name="Note" required="false"/>
        </Tool>""",
    )

    _call, _, last = await call_tool(
        fabric,
        "typed",
        {},
        context={"Attempts": "42", "Score": "2.5", "Vip": "true", "Tier": "gold"},
    )

    assert last["status"] == "success"
    assert json.loads(api.received[0].body) == {
        "Attempts": 42,
        "Score": 2.5,
        "Vip": True,
        "Tier": "gold",
    }


# -- callkaro -------------------------------------------------------------------------------


async def test_callkaro_function_success_gives_its_data(fabric: Fabric, api: RecordingApi) -> None:
    api.reply(
        "GET",
        "/inventory/check",
        json={"status": "success", "data": {"available": True, "quantity": 50}},
    )
    await fabric.register_document(
        AGENT,
        "callkaro",
        example("callkaro_product_availability.json", **{"https://api.example.com": api.url}),
    )

    call, first, last = await call_tool(
        fabric, "check_product_availability", {"product_id": "sku-1", "quantity": 2}
    )

    assert first == pending(call, speech=None, speak=False)
    assert last == success(call, {"available": True, "quantity": 50})
    [received] = api.received
    assert received.query == [("product_id", "sku-1"), ("quantity", "2")]
    assert received.header("authorization") == "Bearer YOUR_API_KEY"


async def test_callkaro_status_error_is_a_tool_error(fabric: Fabric, api: RecordingApi) -> None:
    api.reply("GET", "/inventory/check", json={"status": "error", "message": "Product not found"})
    await fabric.register_document(
        AGENT,
        "callkaro",
        example("callkaro_product_availability.json", **{"https://api.example.com": api.url}),
    )

    call, _, last = await call_tool(
        fabric, "check_product_availability", {"product_id": "sku-404", "quantity": 1}
    )

    assert last == {
        **error_result(
            call,
            "tool_error",
            "Product not found",
            {"body": {"status": "error", "message": "Product not found"}},
            http_status=200,
            attempts=1,
        )
    }


# -- Standard Webhooks, for any tool ---------------------------------------------------------


async def test_standard_webhooks_signatures_verify_with_either_rotated_secret(
    fabric: Fabric, api: RecordingApi
) -> None:
    api.reply("POST", "/hook", json={"ok": True})
    tool = {
        "name": "Signed",
        "request": {
            "url": f"{api.url}/hook",
            "signing": {
                "scheme": "standard_webhooks",
                "secrets": ["{{secrets.HOOK_OLD}}", "{{secrets.HOOK_NEW}}"],
            },
        },
    }
    await fabric.register(AGENT, tool)

    call, _, last = await call_tool(fabric, "Signed", {"n": 1})

    assert last["status"] == "success"
    [received] = api.received
    headers = dict(received.headers)
    assert received.header("webhook-id") == call["call_id"]
    for secret in (SECRETS["HOOK_OLD"], SECRETS["HOOK_NEW"]):
        assert Webhook(secret).verify(received.body, headers) == {"n": 1}
