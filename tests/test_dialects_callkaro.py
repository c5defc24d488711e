"""CallKaro's basic in-call functions: parsed to canonical tools and rendered back."""

import json
from typing import Any

import pytest

from services.registry import dialects
from services.registry.dialects import callkaro
from tests.dialect_support import example, rejection, tool

STOCK = example("callkaro_product_availability.json")
LABEL = "function 'check_product_availability'"
RESPONSE = {
    "tool_error": {"path": "$.status", "equals": "error", "message_path": "$.message"},
    "result_path": "$.data",
}


def stock(**fields: Any) -> dict[str, Any]:
    """The stock check with ``fields`` changed (None removes one)."""
    document = {**json.loads(json.dumps(STOCK)), **fields}
    return {key: value for key, value in document.items() if value is not None}


def test_the_product_availability_example() -> None:
    assert callkaro.parse(STOCK) == [
        tool(
            name="check_product_availability",
            description="Check product availability when customer asks if an item is in stock",
            parameters={
                "type": "object",
                "properties": {
                    "product_id": {
                        "type": "string",
                        "description": "The unique product identifier",
                    },
                    "quantity": {
                        "type": "number",
                        "description": "Quantity customer wants to purchase",
                    },
                },
                "required": ["product_id", "quantity"],
            },
            request={
                "url": "https://api.example.com/inventory/check",
                "method": "GET",
                "headers": {"Authorization": "Bearer YOUR_API_KEY"},
            },
            response=RESPONSE,
        )
    ]


def test_a_list_of_functions_and_parameters_without_descriptions() -> None:
    other = stock(
        name="reserve", method="POST", headers=None, parameters=[{"key": "sku", "type": "string"}]
    )

    tools = callkaro.parse([STOCK, other])

    assert tools[1].parameters == {
        "type": "object",
        "properties": {"sku": {"type": "string"}},
        "required": ["sku"],
    }
    assert (tools[1].http().method, tools[1].http().headers) == ("POST", {})


PARAMETER_FIELDS = "(fields: key, type, description)"


@pytest.mark.parametrize(
    ("document", "message"),
    [
        pytest.param(
            {"name": "check"},
            "function 'check': missing required field 'description'; "
            "function 'check': missing required field 'api_url'; "
            "function 'check': missing required field 'method'; "
            "function 'check': missing required field 'parameters'",
            id="required",
        ),
        pytest.param(
            stock(name=None),
            "functions[0]: missing required field 'name'",
            id="no-name",
        ),
        pytest.param(
            stock(name="check stock"),
            "function 'check stock': name must not contain spaces",
            id="spaces",
        ),
        pytest.param(
            stock(method="PATCH"),
            f"{LABEL}: method must be one of GET, POST, PUT, DELETE",
            id="method",
        ),
        pytest.param(
            stock(parameters={"product_id": "string"}),
            f"{LABEL}: parameters must be a list of {{key, type, description}}",
            id="parameters-not-a-list",
        ),
        pytest.param(
            stock(parameters=["product_id"]),
            f"{LABEL}: parameters[0]: must be an object with key, type and description",
            id="parameter-not-object",
        ),
        pytest.param(
            stock(parameters=[{"type": "string", "description": "The product"}]),
            f"{LABEL}: parameters[0]: key is required (a non-empty string)",
            id="no-key",
        ),
        pytest.param(
            stock(parameters=[{"key": "n", "type": "number"}, {"key": "n", "type": "string"}]),
            f"{LABEL}: parameters[1]: key 'n' is repeated",
            id="repeated-key",
        ),
        pytest.param(
            stock(parameters=[{"key": "quantity", "type": "integer"}]),
            f"{LABEL}: parameters[0]: type must be string or number",
            id="type",
        ),
        pytest.param(
            stock(parameters=[{"key": "quantity"}]),
            f"{LABEL}: parameters[0]: type must be string or number",
            id="no-type",
        ),
        pytest.param(
            stock(parameters=[{"key": "q", "type": "number", "default": 1}]),
            f"{LABEL}: parameters[0]: unknown field 'default' {PARAMETER_FIELDS}",
            id="parameter-field",
        ),
        pytest.param(
            stock(code="async def f(ctx): ..."),
            f"{LABEL}: unknown field 'code' "
            "(fields: mode, name, description, api_url, method, headers, parameters)",
            id="unknown-field",
        ),
        pytest.param(["check"], "functions[0] must be a JSON object", id="not-an-object"),
        pytest.param(
            stock(name="check-stock"),
            "tools[0].name: String should match pattern '^[A-Za-z0-9_]{1,64}$'",
            id="canonical-name",
        ),
    ],
)
def test_each_rule_is_a_422_naming_the_function(document: Any, message: str) -> None:
    error = rejection(lambda: callkaro.parse(document))

    assert (error.status, error.code, error.message) == (422, "invalid_tool", message)


def test_every_problem_is_reported() -> None:
    document = stock(method="PATCH", parameters=[{"type": "integer"}])

    error = rejection(lambda: callkaro.parse(document))

    assert error.details == [
        f"{LABEL}: method must be one of GET, POST, PUT, DELETE",
        f"{LABEL}: parameters[0]: key is required (a non-empty string)",
        f"{LABEL}: parameters[0]: type must be string or number",
    ]


def test_export_gives_back_the_function_as_callkaro_wrote_it() -> None:
    (parsed,) = callkaro.parse(STOCK)

    assert dialects.export("callkaro", parsed) == STOCK


@pytest.mark.parametrize(
    "document",
    [STOCK, stock(headers=None, parameters=[]), stock(parameters=[{"key": "a", "type": "string"}])],
    ids=["example", "no-parameters", "no-description"],
)
def test_parsing_the_export_gives_the_tool_back(document: dict[str, Any]) -> None:
    (parsed,) = callkaro.parse(document)

    assert callkaro.parse(callkaro.export(parsed)) == [parsed]


def canonical(**parameters: Any) -> Any:
    fields = {"name": "Stock", "request": {"url": "https://x.example"}, "response": RESPONSE}
    return tool(**fields, parameters={"type": "object", **parameters})


def test_an_optional_parameter_is_a_409() -> None:
    properties = {"a": {"type": "string"}, "b": {"type": "number"}}

    error = rejection(
        lambda: dialects.export("callkaro", canonical(properties=properties, required=["a"]))
    )

    assert (error.status, error.code, error.message) == (
        409,
        "not_expressible",
        "tool 'Stock' cannot be expressed in callkaro: callkaro has no way to say "
        "parameters.required",
    )


def test_a_type_callkaro_lacks_is_a_409_with_callkaros_rule() -> None:
    properties = {"n": {"type": "integer"}}

    error = rejection(
        lambda: dialects.export("callkaro", canonical(properties=properties, required=["n"]))
    )

    assert error.message == (
        "tool 'Stock' cannot be expressed in callkaro: function 'Stock': parameters[0]: "
        "type must be string or number"
    )
