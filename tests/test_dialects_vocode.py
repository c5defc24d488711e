"""Vocode's external actions: parsed to canonical tools and rendered back."""

import json
from typing import Any

import pytest

from services.registry import dialects
from services.registry.dialects import vocode
from tests.dialect_support import example, rejection, tool

MEETING = example("vocode_meeting_booking.json")
SECRET = MEETING["signature_secret"]
SCHEMA = {
    "type": "object",
    "properties": {
        "length": {"type": "string", "enum": ["30m", "1hr"]},
        "time": {"type": "string", "pattern": r"^\d{2}:\d0[ap]m$"},
    },
}
REQUEST = {
    "url": "http://example.com/booking",
    "method": "POST",
    "body": {"payload": "{{input}}"},
    "json_style": "python",
    "timeout_s": 10,
    "retry": {"attempts": 3, "on": ["connection_error"], "backoff_s": 0.2},
}
RESPONSE = {
    "result_path": "$.result",
    "result_required": True,
    "result_type": "object",
    "agent_message_path": "$.agent_message",
}
LABEL = "action 'Meeting_Booking_Assistant'"
SECRET_RULE = (
    "signature_secret must be base64, such as base64 of 32 random bytes, "
    "or a reference to an account secret: {{secrets.NAME}}"
)
FIELDS = (
    "name, description, url, input_schema, speak_on_send, speak_on_receive, "
    "signature_secret, processing_mode"
)


def action(**fields: Any) -> dict[str, Any]:
    """The meeting action without its secret, with ``fields`` changed (None removes one)."""
    document = {key: value for key, value in MEETING.items() if key != "signature_secret"}
    document.update(fields)
    return {key: value for key, value in document.items() if value is not None}


def test_the_meeting_example_is_a_signed_python_style_post_of_the_payload() -> None:
    assert vocode.parse(MEETING) == [
        tool(
            name="Meeting_Booking_Assistant",
            description="Book a meeting for a 30 minute or 1 hour call.",
            parameters=SCHEMA,
            request={**REQUEST, "signing": {"scheme": "vocode", "secrets": [SECRET]}},
            speech={"on_send": True, "on_receive": True, "muted": False},
            response=RESPONSE,
        )
    ]


def test_the_input_schema_may_be_an_object_instead_of_a_json_string() -> None:
    assert vocode.parse(action(input_schema=SCHEMA)) == vocode.parse(action())


def test_defaults_speak_only_on_receive_and_sign_nothing() -> None:
    (parsed,) = vocode.parse(action(speak_on_send=None, speak_on_receive=None))

    assert parsed.speech.model_dump() == {
        "on_send": False,
        "from_argument": None,
        "on_receive": True,
        "muted": False,
    }
    assert parsed.http().signing is None


def test_muted_processing_keeps_the_agent_silent() -> None:
    (parsed,) = vocode.parse(action(processing_mode="muted"))

    assert parsed.speech.muted is True


def test_a_list_of_actions_gives_one_tool_each() -> None:
    tools = vocode.parse([action(), action(name="Other")])

    assert [t.name for t in tools] == ["Meeting_Booking_Assistant", "Other"]


@pytest.mark.parametrize(
    ("document", "message"),
    [
        pytest.param(
            action(name=None),
            "actions[0]: missing required field 'name'",
            id="no-name",
        ),
        pytest.param(
            action(description=None, url=None, input_schema=None),
            f"{LABEL}: missing required field 'description'; "
            f"{LABEL}: missing required field 'url'; "
            f"{LABEL}: missing required field 'input_schema'",
            id="no-description-url-schema",
        ),
        pytest.param(
            action(action_trigger={}),
            f"{LABEL}: unknown field 'action_trigger' (fields: {FIELDS})",
            id="unknown-field",
        ),
        pytest.param(
            action(speak_on_send="yes"),
            f"{LABEL}: speak_on_send must be true or false",
            id="speak-on-send",
        ),
        pytest.param(
            action(speak_on_receive=1),
            f"{LABEL}: speak_on_receive must be true or false",
            id="speak-on-receive",
        ),
        pytest.param(
            action(input_schema="{type: object}"),
            f"{LABEL}: input_schema is not valid JSON: Expecting property name enclosed "
            "in double quotes: line 1 column 2 (char 1)",
            id="schema-json",
        ),
        pytest.param(
            action(input_schema='{"type": "array"}'),
            f'{LABEL}: input_schema must be a JSON Schema whose top level is an object ("type": '
            '"object")',
            id="schema-array",
        ),
        pytest.param(
            action(input_schema=["length"]),
            f'{LABEL}: input_schema must be a JSON Schema whose top level is an object ("type": '
            '"object")',
            id="schema-not-object",
        ),
        pytest.param(
            action(signature_secret="not base64!"),
            f"{LABEL}: {SECRET_RULE}",
            id="secret",
        ),
        pytest.param(
            action(signature_secret=""),
            f"{LABEL}: {SECRET_RULE}",
            id="empty-secret",
        ),
        pytest.param(
            action(processing_mode="normal"),
            f'{LABEL}: processing_mode must be "muted", the only mode Vocode has',
            id="processing-mode",
        ),
        pytest.param(["action"], "actions[0] must be a JSON object", id="not-an-object"),
        pytest.param(
            action(name="Meeting Booking"),
            "tools[0].name: String should match pattern '^[A-Za-z0-9_]{1,64}$'",
            id="canonical-name",
        ),
        pytest.param(
            action(input_schema={"type": "object", "properties": {"time": {"type": "clock"}}}),
            "tools[0].parameters: Value error, not a valid JSON Schema at properties/time/type: "
            "'clock' is not valid under any of the given schemas",
            id="canonical-schema",
        ),
    ],
)
def test_each_rule_is_a_422_naming_the_action(document: Any, message: str) -> None:
    error = rejection(lambda: vocode.parse(document))

    assert (error.status, error.code, error.message) == (422, "invalid_tool", message)


def test_every_problem_of_a_document_is_reported() -> None:
    error = rejection(lambda: vocode.parse([action(speak_on_send="yes"), action(url=None)]))

    assert error.details == [
        f"{LABEL}: speak_on_send must be true or false",
        f"{LABEL}: missing required field 'url'",
    ]


def test_export_writes_the_action_back() -> None:
    (parsed,) = vocode.parse(action(processing_mode="muted", input_schema=SCHEMA))

    assert dialects.export("vocode", parsed) == {
        "name": "Meeting_Booking_Assistant",
        "description": "Book a meeting for a 30 minute or 1 hour call.",
        "url": "http://example.com/booking",
        "input_schema": json.dumps(SCHEMA),
        "speak_on_send": True,
        "speak_on_receive": True,
        "processing_mode": "muted",
    }


@pytest.mark.parametrize(
    "document",
    [MEETING, action(), action(processing_mode="muted", speak_on_receive=False)],
    ids=["example", "unsigned", "muted"],
)
def test_parsing_the_export_gives_the_tool_back(document: dict[str, Any]) -> None:
    (parsed,) = vocode.parse(document)

    assert vocode.parse(vocode.export(parsed)) == [parsed]


@pytest.mark.parametrize(
    ("change", "lost"),
    [
        ({"request": {**REQUEST, "headers": {"X-Key": "k"}}}, "request.headers.X-Key"),
        ({"request": {**REQUEST, "timeout_s": 5}}, "request.timeout_s"),
        ({"speech": {"on_send": "One moment."}}, "speech.on_send"),
        ({"response": {**RESPONSE, "variables": {"slot": "$.slot"}}}, "response.variables.slot"),
        (
            {"request": {**REQUEST, "signing": {"scheme": "standard_webhooks", "secrets": ["s"]}}},
            "request.signing",
        ),
    ],
    ids=["headers", "timeout", "static-filler", "variables", "other-signing"],
)
def test_a_tool_of_another_shape_is_a_409_naming_what_does_not_fit(
    change: dict[str, Any], lost: str
) -> None:
    fields = {"name": "Book", "parameters": SCHEMA, "request": REQUEST, "response": RESPONSE}
    error = rejection(lambda: dialects.export("vocode", tool(**{**fields, **change})))

    assert (error.status, error.code) == (409, "not_expressible")
    assert (
        error.message
        == f"tool 'Book' cannot be expressed in vocode: vocode has no way to say {lost}"
    )


def test_a_secret_vocode_cannot_hold_is_a_409_with_the_parse_reason() -> None:
    signing = {"scheme": "vocode", "secrets": ["{{secrets.VOCODE.key}}"]}
    request = {**REQUEST, "signing": signing}
    fields = {"name": "Book", "parameters": SCHEMA, "request": request, "response": RESPONSE}

    error = rejection(lambda: dialects.export("vocode", tool(**fields)))

    assert (error.status, error.message) == (
        409,
        f"tool 'Book' cannot be expressed in vocode: action 'Book': {SECRET_RULE}",
    )


def test_a_signature_secret_may_name_an_account_secret() -> None:
    (parsed,) = vocode.parse(action(signature_secret="{{secrets.VOCODE_KEY}}"))

    signing = parsed.http().signing
    assert signing is not None
    assert signing.secrets == ["{{secrets.VOCODE_KEY}}"]


@pytest.mark.parametrize("secret", [SECRET, "{{secrets.VOCODE_KEY}}"], ids=["value", "reference"])
def test_an_export_shows_that_there_is_a_secret_never_what_it_is(secret: str) -> None:
    (parsed,) = vocode.parse(action(signature_secret=secret))

    exported = dialects.export("vocode", parsed)

    assert isinstance(exported, dict)
    assert exported["signature_secret"] == "***"
    assert vocode.export(parsed)["signature_secret"] == secret  # what the round trip compares
