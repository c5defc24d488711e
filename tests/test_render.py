"""Rendering a tool's request: the contract's template rules, byte for byte."""

import json

import pytest
from aiohttp import web

from shared.calls.client import Sender
from shared.calls.render import render_request
from shared.contract.errors import CallRejected, ErrorCode
from shared.security.destinations import DestinationPolicy
from tests.factories import work_item
from tests.support.api import RecordingApi

ARGS = {
    "date": "2024-04-20",
    "guests": 2,
    "vip": True,
    "tags": ["a", "b"],
    "who": {"name": "Ana Lu"},
}


def test_whole_value_templates_keep_their_json_type() -> None:
    work = work_item(
        {
            "url": "https://api.example.com/book",
            "body": {
                "n": "{{input.guests}}",
                "vip": "{{input.vip}}",
                "who": "{{input.who}}",
                "name": "{{input.who.name}}",
            },
        },
        ARGS,
    )

    request = render_request(work, {})

    assert request.body == b'{"n":2,"vip":true,"who":{"name":"Ana Lu"},"name":"Ana Lu"}'


def test_templates_inside_text_render_as_text() -> None:
    work = work_item(
        {
            "url": "https://api.example.com/book",
            "body": {
                "note": "{{input.guests}} guests, vip={{input.vip}}, "
                "tags={{input.tags}}, call {{call.id}} in "
                "{{conversation.id}} from {{context.From}}"
            },
        },
        ARGS,
    )

    assert json.loads(render_request(work, {}).body or b"") == {
        "note": '2 guests, vip=true, tags=["a","b"], call call-1 in conv-1 from +1222'
    }


def test_a_missing_argument_drops_whole_value_keys_and_is_empty_inside_text() -> None:
    work = work_item(
        {
            "url": "https://api.example.com/x?y={{input.none}}",
            "headers": {"X-Missing": "{{input.none}}", "X-Text": "a{{input.none}}b"},
            "query": {"q": "{{input.none}}", "r": "{{input.date}}"},
            "body": {"gone": "{{input.none}}", "kept": "[{{input.none}}]"},
        },
        ARGS,
    )

    request = render_request(work, {})

    assert request.url == "https://api.example.com/x?y="
    assert "X-Missing" not in request.headers
    assert request.headers["X-Text"] == "ab"
    assert request.params == [("r", "2024-04-20")]
    assert request.body == b'{"kept":"[]"}'


def test_values_in_a_url_are_percent_encoded() -> None:
    work = work_item({"url": "https://api.example.com/people/{{input.who.name}}/x"}, ARGS)

    assert render_request(work, {}).url == "https://api.example.com/people/Ana%20Lu/x"


def test_get_sends_the_arguments_as_query_parameters() -> None:
    work = work_item({"url": "https://api.example.com/slots", "method": "GET"}, ARGS)

    request = render_request(work, {})

    assert request.params == [
        ("date", "2024-04-20"),
        ("guests", "2"),
        ("vip", "true"),
        ("tags", "a"),
        ("tags", "b"),
        ("who", '{"name":"Ana Lu"}'),
    ]
    assert request.body is None
    assert "Content-Type" not in request.headers


def test_other_methods_send_the_arguments_as_the_json_body() -> None:
    work = work_item({"url": "https://api.example.com/book", "method": "PUT"}, {"ü": "é"})

    request = render_request(work, {})

    assert request.body == '{"ü":"é"}'.encode()
    assert request.headers == {
        "Accept": "application/json",
        "User-Agent": "midcall/0.1",
        "Idempotency-Key": "call-1",
        "Content-Type": "application/json",
    }


def test_tool_headers_override_defaults_case_insensitively() -> None:
    work = work_item({"url": "https://api.example.com/", "headers": {"accept": "text/csv"}})

    headers = render_request(work, {}).headers

    assert headers["accept"] == "text/csv"
    assert "Accept" not in headers


def test_a_header_value_cannot_smuggle_line_breaks() -> None:
    work = work_item(
        {"url": "https://api.example.com/", "headers": {"X-Name": "{{input.n}}"}},
        {"n": "x\r\nX-Evil: 1"},
    )

    with pytest.raises(CallRejected) as rejected:
        render_request(work, {})
    assert rejected.value.code == ErrorCode.INVALID_ARGUMENTS
    assert rejected.value.message == (
        "The value for the 'X-Name' header cannot contain line breaks or other control characters."
    )


def test_a_missing_secret_fails_the_call_without_naming_any_value() -> None:
    work = work_item(
        {
            "url": "https://api.example.com/",
            "headers": {"Authorization": "Bearer {{secrets.KEY}}", "X-Other": "{{secrets.OTHER}}"},
        }
    )

    with pytest.raises(CallRejected) as rejected:
        render_request(work, {"OTHER": "hunter2"})
    assert rejected.value.code == ErrorCode.INTERNAL
    assert rejected.value.details == {"missing_secrets": ["KEY"]}
    assert "hunter2" not in rejected.value.message


async def test_the_sender_puts_exactly_the_rendered_request_on_the_wire(
    api: RecordingApi,
) -> None:
    api.reply("POST", "/book", status=201, json={"ok": True})
    work = work_item(
        {
            "url": f"{api.url}/book?src=1",
            "query": {"a": "{{input.date}}", "vip": "{{input.vip}}"},
            "headers": {"Authorization": "Bearer {{secrets.KEY}}"},
        },
        ARGS,
    )
    sender = Sender(4, DestinationPolicy("127.0.0.1"), 1024)

    response = await sender.send(render_request(work, {"KEY": "k"}), 5.0)
    await sender.close()

    [request] = api.received
    assert request.query == [("src", "1"), ("a", "2024-04-20"), ("vip", "true")]
    assert request.header("Authorization") == "Bearer k"
    assert request.header("Content-Type") == "application/json"
    assert request.header("Cookie") is None
    assert request.body == json.dumps(ARGS, separators=(",", ":")).encode()
    assert (response.status, response.body, response.truncated) == (201, '{"ok": true}', False)
    assert response.content_type == "application/json; charset=utf-8"


async def test_the_sender_keeps_no_cookie_between_calls(api: RecordingApi) -> None:
    async def set_cookie(_: web.Request) -> web.StreamResponse:
        response = web.json_response({})
        response.set_cookie("session", "customer-a")
        return response

    api.route("GET", "/a", set_cookie)
    api.reply("GET", "/b", json={})
    sender = Sender(4, DestinationPolicy("127.0.0.1"), 1024)

    for path in ("/a", "/b"):
        request = render_request(work_item({"url": f"{api.url}{path}", "method": "GET"}), {})
        await sender.send(request, 5.0)
    await sender.close()

    assert [r.header("Cookie") for r in api.received] == [None, None]


async def test_the_sender_stops_reading_past_the_response_cap(api: RecordingApi) -> None:
    api.reply("GET", "/big", text="x" * 5000)
    sender = Sender(4, DestinationPolicy("127.0.0.1"), 4096)
    request = render_request(work_item({"url": f"{api.url}/big", "method": "GET"}), {})

    response = await sender.send(request, 5)
    await sender.close()

    assert (response.body, response.truncated) == ("", True)


def test_python_json_style_is_json_dumps_with_its_defaults() -> None:
    arguments = {"length": "30m", "time": "10:30am", "name": "Zoë"}
    work = work_item(
        {
            "url": "https://api.example.com/",
            "body": {"payload": "{{input}}"},
            "json_style": "python",
        },
        arguments,
    )

    assert render_request(work, {}).body == json.dumps({"payload": arguments}).encode()


def test_signing_secrets_are_resolved_and_required() -> None:
    signing = {"scheme": "standard_webhooks", "secrets": ["{{secrets.A}}", "whsec_bGl0ZXJhbA=="]}
    work = work_item({"url": "https://api.example.com/", "signing": signing})

    assert render_request(work, {"A": "whsec_YQ=="}).signing_secrets == (
        "whsec_YQ==",
        "whsec_bGl0ZXJhbA==",
    )
    with pytest.raises(CallRejected) as rejected:
        render_request(work, {})
    assert rejected.value.details == {"missing_secrets": ["A"]}
