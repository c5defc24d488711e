"""``bland``: Bland AI's custom tools.

Bland's ``{{input.x}}`` templates are already Midcall's. Its input schema is
loose: a property may be a plain string describing the value ("YYYY-MM-DD"),
and an ``example`` object shows the LLM a whole input.
"""

import json
from typing import Any

from services.registry.dialects import rules
from services.registry.dialects.canonical import validate
from shared.contract.tools import Tool

FIELDS = (
    "name",
    "description",
    "url",
    "method",
    "headers",
    "body",
    "query",
    "input_schema",
    "speech",
    "response",
)
REQUIRED = ("name", "url")
TEXT_FIELDS = ("description", "speech")
REQUEST_FIELDS = ("url", "method", "headers", "body", "query")
TYPE_NAMES = frozenset({"string", "number", "integer", "boolean", "object", "array"})
EXAMPLE_PREFIX = "\n\nExample input: "
# The input property in which the LLM writes its own words to say while the tool runs.
SPEECH_ARGUMENT = "speech"


def parse(document: Any) -> list[Tool]:
    """One tool, a list, or a call request's ``{"tools": [...]}`` (its other fields ignored)."""
    tools = rules.entries(document, "tool", "tools", wrapper="tools")
    rules.reject([problem for label, tool in tools for problem in _problems(label, tool)])
    return validate([_tool(tool) for _, tool in tools])


def split(document: Any) -> list[Any]:
    """Each tool as posted, in ``parse``'s order; a call request's other fields are no tool's."""
    return rules.definitions(document, "tool", wrapper="tools")


def export(tool: Tool) -> dict[str, Any]:
    input_schema, description = _input_schema(tool.parameters, tool.description)
    request = tool.http()
    document = {
        "name": tool.name,
        "description": description,
        "url": request.url,
        "method": request.method,
        "headers": request.headers or None,
        "body": request.body,
        "query": request.query,
        "input_schema": input_schema,
        "speech": tool.speech.on_send if isinstance(tool.speech.on_send, str) else None,
        "response": tool.response.variables or None,
    }
    return {field: value for field, value in document.items() if value is not None}


def _problems(label: str, tool: dict[str, Any]) -> list[str]:
    problems = [*rules.missing(label, tool, REQUIRED), *rules.unknown(label, tool, FIELDS)]
    problems += [
        f"{label}: {field} must be a string"
        for field in TEXT_FIELDS
        if not isinstance(tool.get(field, ""), str)
    ]
    schema = tool.get("input_schema", {})
    if not isinstance(schema, dict):
        return [*problems, f"{label}: input_schema must be a JSON object"]
    properties = schema.get("properties", {})
    if not isinstance(properties, dict):
        return [*problems, f"{label}: input_schema.properties must be a JSON object"]
    return problems + [
        f"{label}: input_schema.properties.{name} must be a JSON Schema or a string "
        "describing the value"
        for name, value in properties.items()
        if not isinstance(value, str | dict | bool)
    ]


def _tool(tool: dict[str, Any]) -> dict[str, Any]:
    schema = tool.get("input_schema", {})
    description = tool.get("description", "")
    if "example" in schema:
        description += _example_line(schema["example"])
    speech_argument = SPEECH_ARGUMENT in schema.get("properties", {})
    return {
        "name": tool["name"],
        "description": description,
        "parameters": _parameters(schema),
        "request": {field: tool[field] for field in REQUEST_FIELDS if field in tool},
        "speech": {
            "on_send": tool.get("speech", False),
            "from_argument": SPEECH_ARGUMENT if speech_argument else None,
        },
        "response": {"variables": tool.get("response", {})},
    }


def _parameters(schema: dict[str, Any]) -> dict[str, Any]:
    parameters = {"type": "object", **schema}
    if "properties" in schema:
        parameters["properties"] = {
            name: _property(value) for name, value in schema["properties"].items()
        }
    if "example" in schema:
        del parameters["example"]
        parameters["examples"] = _examples(schema)
    return parameters


def _property(value: Any) -> Any:
    """A type name is a type; any other string only describes the value, so it rejects nothing."""
    if not isinstance(value, str):
        return value
    return {"type": value} if value in TYPE_NAMES else {"description": value}


def _examples(schema: dict[str, Any]) -> Any:
    # A non-list ``examples`` is an invalid schema: kept as it is, for the schema check to name.
    examples = schema.get("examples", [])
    return [*examples, schema["example"]] if isinstance(examples, list) else examples


def _example_line(example: Any) -> str:
    return EXAMPLE_PREFIX + json.dumps(example, separators=(",", ":"), ensure_ascii=False)


def _input_schema(parameters: dict[str, Any], description: str) -> tuple[dict[str, Any], str]:
    """Bland's input schema and description: ``_parameters`` and the example line undone."""
    schema = dict(parameters)
    if "properties" in parameters:
        schema["properties"] = {
            name: _loose(value) for name, value in parameters["properties"].items()
        }
    examples = parameters.get("examples")
    if not (isinstance(examples, list) and examples):
        return schema, description
    line = _example_line(examples[-1])
    if not description.endswith(line):
        return schema, description
    del schema["examples"]
    if examples[:-1]:
        schema["examples"] = examples[:-1]
    return {"example": examples[-1], **schema}, description.removesuffix(line)


def _loose(value: Any) -> Any:
    """The plain string ``_property`` reads as this schema, where there is one."""
    if isinstance(value, dict) and len(value) == 1:
        text = next(iter(value.values()))
        if isinstance(text, str) and _property(text) == value:
            return text
    return value
