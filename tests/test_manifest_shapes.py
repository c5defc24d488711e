"""Each provider's manifest, validated against that provider's documented ``tools`` shape.

The tools under test are each platform's own example, parsed by its dialect, and
canonical tools shaped the way each dialect normalizes to: what reaches the LLM
is whatever those platforms let people write.
"""

from typing import Any

import pytest
from jsonschema import Draft202012Validator

from services.registry import dialects
from shared.contract import manifest
from shared.contract.tools import Tool
from tests.dialect_support import example

JSON_SCHEMA_2020_12 = {"$ref": "https://json-schema.org/draft/2020-12/schema"}

# OpenAI Chat Completions, request body ``tools``:
# https://platform.openai.com/docs/api-reference/chat/create#chat-create-tools
OPENAI_TOOLS = {
    "type": "array",
    "items": {
        "type": "object",
        "additionalProperties": False,
        "required": ["type", "function"],
        "properties": {
            "type": {"const": "function"},
            "function": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name"],
                "properties": {
                    "name": {"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,64}$"},
                    "description": {"type": "string"},
                    # "described as a JSON Schema object"; the API refuses any other top-level type.
                    "parameters": {
                        "allOf": [JSON_SCHEMA_2020_12],
                        "type": "object",
                        "required": ["type"],
                        "properties": {"type": {"const": "object"}},
                    },
                    "strict": {"type": ["boolean", "null"]},
                },
            },
        },
    },
}

# Anthropic Messages, request body ``tools`` (custom tools):
# https://docs.anthropic.com/en/api/messages (tools)
# https://docs.anthropic.com/en/docs/build-with-claude/tool-use/overview
ANTHROPIC_TOOLS = {
    "type": "array",
    "items": {
        "type": "object",
        "additionalProperties": False,
        "required": ["name", "input_schema"],
        "properties": {
            "type": {"const": "custom"},
            "name": {"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,64}$"},
            "description": {"type": "string"},
            "input_schema": {
                "allOf": [JSON_SCHEMA_2020_12],
                "type": "object",
                "required": ["type"],
                "properties": {
                    "type": {"const": "object"},
                    "properties": {"type": ["object", "null"]},
                    "required": {"type": ["array", "null"], "items": {"type": "string"}},
                },
            },
            "cache_control": {"type": ["object", "null"]},
        },
    },
}

# Gemini generateContent, request body ``tools``: Tool, FunctionDeclaration and
# Schema at https://ai.google.dev/api/caching#Tool, #FunctionDeclaration, #Schema.
# Type names are the enum's; the function-calling guide's REST examples
# (https://ai.google.dev/gemini-api/docs/function-calling) write them in lower case.
GEMINI_TYPES = ["STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT", "NULL"]
INT64 = {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "string", "pattern": "^[0-9]+$"}]}
STRINGS = {"type": "array", "items": {"type": "string"}}
GEMINI_TOOLS = {
    "type": "array",
    "items": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "functionDeclarations": {"type": "array", "items": {"$ref": "#/$defs/declaration"}},
            "googleSearchRetrieval": {"type": "object"},
            "codeExecution": {"type": "object"},
            "googleSearch": {"type": "object"},
            "urlContext": {"type": "object"},
        },
    },
    "$defs": {
        "declaration": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name", "description"],
            "properties": {
                "name": {"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,63}$"},
                "description": {"type": "string"},
                "behavior": {"enum": ["UNSPECIFIED", "BLOCKING", "NON_BLOCKING"]},
                "parameters": {"$ref": "#/$defs/parameters"},
                "parametersJsonSchema": {},
                "response": {"$ref": "#/$defs/schema"},
                "responseJsonSchema": {},
            },
            "not": {"required": ["parameters", "parametersJsonSchema"]},
        },
        # The API also refuses an OBJECT schema whose properties are empty.
        "parameters": {
            "$ref": "#/$defs/schema",
            "required": ["properties"],
            "properties": {
                "type": {"enum": ["OBJECT", "object"]},
                "properties": {"minProperties": 1},
            },
        },
        "schema": {
            "type": "object",
            "additionalProperties": False,
            "required": ["type"],
            "properties": {
                "type": {"enum": GEMINI_TYPES + [t.lower() for t in GEMINI_TYPES]},
                "format": {"type": "string"},
                "title": {"type": "string"},
                "description": {"type": "string"},
                "nullable": {"type": "boolean"},
                "enum": STRINGS,
                "maxItems": INT64,
                "minItems": INT64,
                "properties": {
                    "type": "object",
                    "additionalProperties": {"$ref": "#/$defs/schema"},
                },
                "required": STRINGS,
                "minProperties": INT64,
                "maxProperties": INT64,
                "minLength": INT64,
                "maxLength": INT64,
                "pattern": {"type": "string"},
                "example": {},
                "anyOf": {"type": "array", "items": {"$ref": "#/$defs/schema"}},
                "propertyOrdering": STRINGS,
                "default": {},
                "items": {"$ref": "#/$defs/schema"},
                "minimum": {"type": "number"},
                "maximum": {"type": "number"},
            },
            # "Possible values of the element of Type.STRING with enum format."
            "if": {"required": ["enum"]},
            "then": {"properties": {"type": {"enum": ["STRING", "string"]}}},
        },
    },
}

SHAPES: dict[manifest.Format, dict[str, Any]] = {
    "openai": OPENAI_TOOLS,
    "anthropic": ANTHROPIC_TOOLS,
    "gemini": GEMINI_TOOLS,
}


def tool(**fields: Any) -> Tool:
    return Tool.model_validate(fields)


# The tools as each platform dialect normalizes them.
VOCODE = tool(
    name="BookMeeting",
    description="Book a meeting for a 30 minute or 1 hour call.",
    parameters={
        "type": "object",
        "properties": {
            "length": {"type": "string", "enum": ["30m", "1hr"]},
            "time": {"type": "string", "pattern": r"^\d{2}:\d0[ap]m$"},
        },
    },
    request={
        "url": "https://api.example.com/vocode/book",
        "body": {"payload": "{{input}}"},
        "json_style": "python",
        "signing": {"scheme": "vocode", "secrets": ["{{secrets.VOCODE_SECRET}}"]},
    },
    speech={"on_send": True, "muted": True},
)
BLAND = tool(
    name="CheckAvailability",
    description="Checks which appointment times are free on a day.",
    parameters={
        "type": "object",
        "examples": [{"date": "2026-11-22", "speech": "Let me check that for you."}],
        "properties": {
            "date": {"description": "The day the caller wants, as YYYY-MM-DD"},
            "speech": {"description": "A short sentence to say while checking"},
        },
        "required": ["date"],
    },
    request={"url": "https://api.example.com/availability", "body": {"date": "{{input.date}}"}},
    speech={"from_argument": "speech"},
)
AIVOCO = tool(
    name="GetOrderStatus",
    description="Looks up where an order is.",
    parameters={
        "type": "object",
        "properties": {
            "order_id": {"type": "string", "description": "The order number the caller reads out"},
            "channel": {"type": "string", "enum": ["sms", "whatsapp"]},
        },
        "required": ["order_id"],
    },
    request={"url": "https://api.example.com/orders/status", "method": "GET"},
)
XML = tool(
    name="TransferToSales",
    description="Transfers the caller to the sales team.",
    parameters={"type": "object", "properties": {}},
    context_parameters=[{"name": "From"}, {"name": "To"}],
    request={
        "url": "https://api.example.com/transfer",
        "method": "GET",
        "query": {"from": "{{context.From}}", "to": "{{context.To}}"},
    },
)
CALLKARO = tool(
    name="CreateLead",
    description="Saves the caller as a sales lead.",
    parameters={
        "type": "object",
        "properties": {
            "customer_name": {"type": "string", "description": "The caller's full name"},
            "budget": {"type": "number", "description": "Budget in rupees"},
        },
        "required": ["customer_name", "budget"],
    },
    request={"url": "https://api.example.com/leads"},
)
# A context parameter the platform also declared to the LLM: the call binds it, not the LLM.
BOUND = tool(
    name="BookAppointment",
    description="Books an appointment.",
    parameters={
        "type": "object",
        "properties": {
            "date": {"type": "string", "format": "date"},
            "caller_number": {"type": "string", "description": "The caller's phone number"},
        },
        "required": ["date", "caller_number"],
    },
    context_parameters=[{"name": "caller_number"}],
    request={"url": "https://api.example.com/book"},
)
TOOLS = {
    "vocode": VOCODE,
    "bland": BLAND,
    "aivoco": AIVOCO,
    "xml": XML,
    "callkaro": CALLKARO,
    "bound": BOUND,
}
FORMATS = list(SHAPES)


def shape_errors(fmt: manifest.Format, tools: list[Tool]) -> list[str]:
    validator = Draft202012Validator(SHAPES[fmt])
    errors = validator.iter_errors(manifest.render(fmt, tools))
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors]


def declared_names(fmt: manifest.Format, tools: list[Tool]) -> set[str]:
    """Every parameter name the LLM is told about, required or not."""
    names: set[str] = set()
    for schema in parameter_schemas(fmt, tools):
        names |= set(schema.get("properties", {})) | set(schema.get("required", []))
    return names


def parameter_schemas(fmt: manifest.Format, tools: list[Tool]) -> list[dict[str, Any]]:
    rendered = manifest.render(fmt, tools)
    if fmt == "openai":
        return [entry["function"]["parameters"] for entry in rendered]
    if fmt == "anthropic":
        return [entry["input_schema"] for entry in rendered]
    declarations = [d for entry in rendered for d in entry["functionDeclarations"]]
    return [d["parameters"] for d in declarations if "parameters" in d]


def test_the_shapes_are_valid_json_schemas() -> None:
    for shape in SHAPES.values():
        Draft202012Validator.check_schema(shape)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", list(TOOLS))
def test_each_dialects_tool_has_the_providers_shape(fmt: manifest.Format, name: str) -> None:
    assert shape_errors(fmt, [TOOLS[name]]) == []


@pytest.mark.parametrize("fmt", FORMATS)
def test_all_tools_together_have_the_providers_shape(fmt: manifest.Format) -> None:
    assert shape_errors(fmt, list(TOOLS.values())) == []


@pytest.mark.parametrize("fmt", FORMATS)
def test_context_parameters_reach_no_manifest(fmt: manifest.Format) -> None:
    names = declared_names(fmt, list(TOOLS.values()))

    assert names.isdisjoint({"From", "To", "caller_number"})
    assert "date" in names


def test_gemini_gives_an_untyped_schema_the_nearest_type() -> None:
    schema = {
        "properties": {
            "date": {"description": "YYYY-MM-DD"},
            "slots": {"items": {"type": "string"}},
            "either": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
        }
    }

    assert manifest.gemini_schema(schema) == {
        "type": "object",
        "properties": {
            "date": {"type": "string", "description": "YYYY-MM-DD"},
            "slots": {"type": "array", "items": {"type": "string"}},
            "either": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
        },
    }


@pytest.mark.parametrize(
    ("fmt", "broken"),
    [
        ("openai", [{"type": "function", "function": {"name": "has space"}}]),
        ("anthropic", [{"name": "T", "input_schema": {"type": "array"}}]),
        ("gemini", [{"functionDeclarations": [{"name": "T", "description": ""}], "x": 1}]),
        (
            "gemini",
            [
                {
                    "functionDeclarations": [
                        {
                            "name": "T",
                            "description": "",
                            "parameters": {
                                "type": "object",
                                "properties": {"d": {"description": "untyped"}},
                            },
                        }
                    ]
                }
            ],
        ),
    ],
)
def test_the_shapes_catch_what_the_providers_refuse(
    fmt: manifest.Format, broken: list[dict[str, Any]]
) -> None:
    assert not Draft202012Validator(SHAPES[fmt]).is_valid(broken)


EXAMPLE_FILES = {
    "vocode": "vocode_meeting_booking.json",
    "bland": "bland_book_appointment.json",
    "aivoco": "aivoco_functions.json",
    "xml": "xml_contact_lookup.xml",
    "callkaro": "callkaro_product_availability.json",
}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dialect", list(EXAMPLE_FILES))
def test_each_platforms_own_example_has_the_providers_shape(
    fmt: manifest.Format, dialect: str
) -> None:
    tools = dialects.parse(dialect, example(EXAMPLE_FILES[dialect]))

    assert shape_errors(fmt, tools) == []
    assert declared_names(fmt, tools).isdisjoint(
        {p.name for t in tools for p in t.context_parameters}
    )


# A python tool taking every type a function's parameter may have (see python_types).
EVERY_TYPE = '''
async def every_type(
    ctx: RunContext,
    text: str,
    count: int,
    ratio: float,
    flag: bool,
    anything: Any,
    maybe_anything: Any | None,
    names: list[str],
    scores: dict[str, float],
    unit: Literal["c", "f"] = "c",
    mixed: Literal["auto", 0] | None = None,
    rows: Optional[list[dict[str, int]]] = None,
) -> dict:
    """Take one of each.

    Args:
        text: Text.
        count: A count.
        ratio: A ratio.
        flag: A flag.
        anything: Any value.
        maybe_anything: Any value, or none.
        names: Names.
        scores: Scores by name.
        unit: The unit.
        mixed: Auto or zero.
        rows: Rows of counts.
    """
    return {"status": "success"}
'''


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    "code", [example("callkaro_get_weather.py"), EVERY_TYPE], ids=["get_weather", "every-type"]
)
def test_a_python_tools_manifest_has_the_providers_shape(fmt: manifest.Format, code: str) -> None:
    tools = dialects.parse("callkaro", {"mode": "advanced", "code": code})

    assert shape_errors(fmt, tools) == []
    assert declared_names(fmt, tools) == set(tools[0].parameters["properties"])
