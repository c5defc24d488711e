"""Aivoco's functions: checked by Aivoco's documented rules, parsed and rendered back."""

import json
from typing import Any

import pytest

from services.registry import dialects
from services.registry.dialects import aivoco
from tests.dialect_support import example, rejection, tool

FUNCTIONS = example("aivoco_functions.json")
WEATHER, BOOKING = FUNCTIONS["functions"]
LABEL = "function 'get_weather'"
ERRORS = {"messages": {"timeout": "Function timed out after 30 seconds"}}


def weather(**fields: Any) -> dict[str, Any]:
    """get_weather with ``fields`` changed (None removes one)."""
    document = {**json.loads(json.dumps(WEATHER)), **fields}
    return {key: value for key, value in document.items() if value is not None}


def test_the_weather_and_booking_examples() -> None:
    assert aivoco.parse(FUNCTIONS) == [
        tool(
            name="get_weather",
            description="Get current weather for a specific location",
            parameters=WEATHER["parameters"],
            request={
                "url": "https://api.weatherapi.com/v1/current.json",
                "method": "GET",
                "headers": {"Content-Type": "application/json"},
                "timeout_s": 30,
            },
            errors=ERRORS,
        ),
        tool(
            name="book_appointment",
            description="Book an appointment for a customer",
            parameters=BOOKING["parameters"],
            request={
                "url": "https://api.yourbooking.com/appointments",
                "method": "POST",
                "headers": {
                    "Content-Type": "application/json",
                    "X-API-Key": "YOUR_BOOKING_API_KEY",
                },
                "timeout_s": 30,
            },
            errors=ERRORS,
        ),
    ]


def test_one_function_or_a_list_of_them_is_taken_too() -> None:
    assert aivoco.parse(WEATHER) == aivoco.parse([WEATHER]) == aivoco.parse(FUNCTIONS)[:1]


def test_header_placeholders_name_arguments_and_templates_pass_through() -> None:
    headers = {
        "Authorization": "Bearer {api_key}",
        "X-User-ID": "{user_id}",
        "X-Tenant": "{{secrets.TENANT}}",
    }

    (parsed,) = aivoco.parse(weather(headers=headers))

    assert parsed.http().headers == {
        "Authorization": "Bearer {{input.api_key}}",
        "X-User-ID": "{{input.user_id}}",
        "X-Tenant": "{{secrets.TENANT}}",
    }


def test_a_schema_without_a_type_is_an_object_schema() -> None:
    (parsed,) = aivoco.parse(weather(parameters={"properties": {}}))

    assert parsed.parameters == {"type": "object", "properties": {}}


@pytest.mark.parametrize(
    ("document", "message"),
    [
        pytest.param(
            {},
            "functions[0]: missing required field 'name'; "
            "functions[0]: missing required field 'description'; "
            "functions[0]: missing required field 'api_url'; "
            "functions[0]: missing required field 'method'; "
            "functions[0]: missing required field 'parameters'",
            id="required",
        ),
        pytest.param(
            weather(name="get-weather"),
            "function 'get-weather': name must contain only letters, digits and underscores",
            id="name",
        ),
        pytest.param(
            weather(method="FETCH"),
            f"{LABEL}: method must be one of GET, POST, PUT, DELETE, PATCH",
            id="method",
        ),
        pytest.param(
            weather(api_url="ftp://api.weatherapi.com/v1/current.json"),
            f"{LABEL}: api_url must start with http:// or https://",
            id="api-url",
        ),
        pytest.param(
            weather(parameters={"type": "object"}),
            f"{LABEL}: parameters must be an object with a properties field",
            id="no-properties",
        ),
        pytest.param(
            weather(parameters="location"),
            f"{LABEL}: parameters must be an object with a properties field",
            id="parameters-not-object",
        ),
        pytest.param(
            weather(timeout=30),
            f"{LABEL}: unknown field 'timeout' "
            "(fields: name, description, api_url, method, headers, parameters)",
            id="unknown-field",
        ),
        pytest.param(
            {"functions": [42]},
            "functions[0] must be a JSON object",
            id="not-an-object",
        ),
        pytest.param(
            {"functions": {"name": "get_weather"}},
            "functions must be a list of function objects",
            id="functions-not-a-list",
        ),
        pytest.param(
            weather(api_url="https://"),
            "tools[0].request.url: Value error, must be an absolute http:// or https:// URL",
            id="canonical-url",
        ),
    ],
)
def test_each_rule_is_a_422_naming_the_function(document: Any, message: str) -> None:
    error = rejection(lambda: aivoco.parse(document))

    assert (error.status, error.code, error.message) == (422, "invalid_tool", message)


def test_every_violation_of_the_document_is_reported() -> None:
    document = {"functions": [weather(method="get"), {"description": "x", "api_url": "x"}]}

    error = rejection(lambda: aivoco.parse(document))

    assert error.details == [
        f"{LABEL}: method must be one of GET, POST, PUT, DELETE, PATCH",
        "functions[1]: missing required field 'name'",
        "functions[1]: missing required field 'method'",
        "functions[1]: missing required field 'parameters'",
        "functions[1]: api_url must start with http:// or https://",
    ]


@pytest.mark.parametrize("function", [WEATHER, BOOKING], ids=["weather", "booking"])
def test_export_gives_back_the_function_as_aivoco_wrote_it(function: dict[str, Any]) -> None:
    (parsed,) = aivoco.parse(function)

    assert dialects.export("aivoco", parsed) == function


@pytest.mark.parametrize(
    "document",
    [WEATHER, BOOKING, weather(headers={"X-User-ID": "{user_id}"}), weather(headers=None)],
    ids=["weather", "booking", "placeholder", "no-headers"],
)
def test_parsing_the_export_gives_the_tool_back(document: dict[str, Any]) -> None:
    (parsed,) = aivoco.parse(document)

    assert aivoco.parse(aivoco.export(parsed)) == [parsed]


def test_a_tool_with_a_body_or_another_timeout_is_a_409() -> None:
    request = {"url": "https://x.example", "body": {"q": "{{input.q}}"}, "timeout_s": 10}
    parameters = {"type": "object", "properties": {}}
    fields = {"name": "Search", "parameters": parameters, "request": request, "errors": ERRORS}

    error = rejection(lambda: dialects.export("aivoco", tool(**fields)))

    assert (error.status, error.message) == (
        409,
        "tool 'Search' cannot be expressed in aivoco: aivoco has no way to say "
        "request.body, request.timeout_s",
    )


def test_a_schema_without_properties_is_a_409_with_aivocos_rule() -> None:
    fields = {
        "name": "Ping",
        "request": {"url": "https://x.example"},
        "parameters": {"type": "object"},
    }

    error = rejection(lambda: dialects.export("aivoco", tool(**fields)))

    assert error.message == (
        "tool 'Ping' cannot be expressed in aivoco: function 'Ping': parameters must be an "
        "object with a properties field"
    )
