"""Bland AI's custom tools: parsed to canonical tools and rendered back."""

import json
from typing import Any

import pytest

from services.registry import dialects
from services.registry.dialects import bland
from tests.dialect_support import example, rejection, tool

BOOK = example("bland_book_appointment.json")
EXAMPLE_INPUT = BOOK["input_schema"]["example"]
LABEL = "tool 'BookAppointment'"
FIELDS = "name, description, url, method, headers, body, query, input_schema, speech, response"


def with_fields(**fields: Any) -> dict[str, Any]:
    """The BookAppointment tool with ``fields`` changed (None removes one)."""
    document = {**json.loads(json.dumps(BOOK)), **fields}
    return {key: value for key, value in document.items() if value is not None}


def test_the_book_appointment_example() -> None:
    described = (
        "Books an appointment for the customer\n\nExample input: "
        '{"speech":"Got it - one second while I book your appointment for tomorrow at 10 AM.",'
        '"date":"2024-04-20","time":"10:00 AM","service":"Haircut"}'
    )
    assert bland.parse(BOOK) == [
        tool(
            name="BookAppointment",
            description=described,
            parameters={
                "type": "object",
                "properties": {
                    "speech": {"type": "string"},
                    "date": {"description": "YYYY-MM-DD"},
                    "time": {"description": "HH:MM AM/PM"},
                    "service": {"description": "Haircut, Coloring, Trim, or Other"},
                },
                "examples": [EXAMPLE_INPUT],
            },
            request={
                "url": "https://your-api.com/book-appointment",
                "method": "POST",
                "headers": {"Authorization": "YOUR_API_KEY"},
                "body": {
                    "date": "{{input.date}}",
                    "time": "{{input.time}}",
                    "service": "{{input.service}}",
                },
            },
            speech={"on_send": False, "from_argument": "speech"},
            response={
                "variables": {
                    "succesfully_booked_slot": "$.success",
                    "stylist_name": "$.stylist_name",
                }
            },
        )
    ]


def test_a_call_request_gives_its_tools_and_ignores_the_rest() -> None:
    call = {"phone_number": "+12223334444", "prompt": "...", "tools": [BOOK]}

    assert bland.parse(call) == bland.parse(BOOK)


def test_a_list_of_tools_is_taken_too() -> None:
    assert bland.parse([BOOK, with_fields(name="Cancel")])[1].name == "Cancel"


def test_plain_string_properties_are_types_or_descriptions_and_schemas_are_kept() -> None:
    schema = {
        "properties": {
            "count": "integer",
            "when": "YYYY-MM-DD",
            "plan": {"type": "string", "enum": ["basic", "pro"]},
        },
        "required": ["count"],
    }

    (parsed,) = bland.parse(with_fields(input_schema=schema))

    assert parsed.parameters == {
        "type": "object",
        "properties": {
            "count": {"type": "integer"},
            "when": {"description": "YYYY-MM-DD"},
            "plan": {"type": "string", "enum": ["basic", "pro"]},
        },
        "required": ["count"],
    }
    assert parsed.description == "Books an appointment for the customer"
    assert parsed.speech.from_argument is None


def test_a_speech_string_is_the_filler_and_the_method_defaults_to_post() -> None:
    document = with_fields(speech="Booking that now.", method=None, query={"v": "{{input.date}}"})

    (parsed,) = bland.parse(document)

    assert (parsed.speech.on_send, parsed.http().method) == ("Booking that now.", "POST")
    assert parsed.http().query == {"v": "{{input.date}}"}


def test_an_example_joins_the_schema_examples_already_there() -> None:
    schema = {**BOOK["input_schema"], "examples": [{"date": "2024-01-01"}]}

    (parsed,) = bland.parse(with_fields(input_schema=schema))

    assert parsed.parameters["examples"] == [{"date": "2024-01-01"}, EXAMPLE_INPUT]


def test_a_tool_without_input_schema_takes_no_arguments() -> None:
    (parsed,) = bland.parse(with_fields(input_schema=None, body=None))

    assert parsed.parameters == {"type": "object"}


@pytest.mark.parametrize(
    ("document", "message"),
    [
        pytest.param(
            with_fields(name=None, url=None),
            "tools[0]: missing required field 'name'; tools[0]: missing required field 'url'",
            id="required",
        ),
        pytest.param(
            with_fields(response_data=[]),
            f"{LABEL}: unknown field 'response_data' (fields: {FIELDS})",
            id="unknown-field",
        ),
        pytest.param(
            with_fields(description=["Books"]),
            f"{LABEL}: description must be a string",
            id="description",
        ),
        pytest.param(with_fields(speech=True), f"{LABEL}: speech must be a string", id="speech"),
        pytest.param(
            with_fields(input_schema="date, time"),
            f"{LABEL}: input_schema must be a JSON object",
            id="input-schema",
        ),
        pytest.param(
            with_fields(input_schema={"properties": ["date"]}),
            f"{LABEL}: input_schema.properties must be a JSON object",
            id="properties",
        ),
        pytest.param(
            with_fields(input_schema={"properties": {"date": 8}}),
            f"{LABEL}: input_schema.properties.date must be a JSON Schema or a string "
            "describing the value",
            id="property",
        ),
        pytest.param(
            {"tools": {"name": "BookAppointment"}},
            "tools must be a list of tool objects",
            id="tools-not-a-list",
        ),
        pytest.param({"tools": ["BookAppointment"]}, "tools[0] must be a JSON object", id="item"),
        pytest.param(
            with_fields(headers={"From": "{{from}}"}),
            "tools[0].request: Value error, headers: unknown template root 'from' "
            "(use one of: input, context, secrets, call, conversation)",
            id="canonical-template",
        ),
        pytest.param(
            with_fields(response={"stylist_name": "$.["}),
            "tools[0].response: Value error, variables.stylist_name: '$.[' is not a JSONPath "
            "(Parse error near the end of string!)",
            id="canonical-jsonpath",
        ),
    ],
)
def test_each_rule_is_a_422_naming_the_tool(document: Any, message: str) -> None:
    error = rejection(lambda: bland.parse(document))

    assert (error.status, error.code, error.message) == (422, "invalid_tool", message)


def test_export_gives_back_the_document_as_bland_wrote_it() -> None:
    (parsed,) = bland.parse(BOOK)

    assert dialects.export("bland", parsed) == BOOK


@pytest.mark.parametrize(
    "document",
    [
        BOOK,
        with_fields(speech="One moment.", query={"d": "{{input.date}}"}, method="GET", body=None),
        with_fields(input_schema={**BOOK["input_schema"], "examples": [{"date": "2024-01-01"}]}),
        with_fields(input_schema={"type": "object", "properties": {"n": {"type": "number"}}}),
    ],
    ids=["example", "speech-query", "more-examples", "schema-properties"],
)
def test_parsing_the_export_gives_the_tool_back(document: dict[str, Any]) -> None:
    (parsed,) = bland.parse(document)

    assert bland.parse(bland.export(parsed)) == [parsed]


@pytest.mark.parametrize(
    ("speech", "lost"),
    [
        ({"on_send": True}, "speech.on_send"),
        ({"on_receive": False}, "speech.on_receive"),
        ({"muted": True}, "speech.muted"),
        ({"from_argument": "filler"}, "speech.from_argument"),
    ],
)
def test_speech_bland_cannot_say_is_a_409(speech: dict[str, Any], lost: str) -> None:
    request = {"url": "https://x.example/book"}
    error = rejection(
        lambda: dialects.export("bland", tool(name="Book", request=request, speech=speech))
    )

    assert (error.status, error.code, error.message) == (
        409,
        "not_expressible",
        f"tool 'Book' cannot be expressed in bland: bland has no way to say {lost}",
    )


def test_response_rules_bland_cannot_say_are_a_409_listing_each() -> None:
    response = {"result_path": "$.data", "agent_message_path": "$.say"}
    error = rejection(
        lambda: dialects.export(
            "bland", tool(name="Book", request={"url": "https://x.example"}, response=response)
        )
    )

    assert error.message == (
        "tool 'Book' cannot be expressed in bland: bland has no way to say "
        "response.result_path, response.agent_message_path"
    )
    assert error.details == ["response.result_path", "response.agent_message_path"]
