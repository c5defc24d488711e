"""An agent's tools as LLM function-calling declarations, one shape per provider.

Each function returns exactly what that provider's API takes as its ``tools``
parameter. Context parameters are bound from the call, not chosen by the
LLM, so they are left out of what the LLM sees.
"""

from collections.abc import Callable
from typing import Any, Literal

from shared.contract.tools import Tool

Format = Literal["openai", "anthropic", "gemini"]

# Gemini's Schema is a subset of OpenAPI 3.0; it rejects any other key
# ($schema, $id, $defs, $ref, additionalProperties, const, examples, ...).
# fmt: off
GEMINI_SCHEMA_KEYS = frozenset({
    "type", "format", "title", "description", "nullable", "enum", "default", "example",
    "properties", "required", "propertyOrdering", "minProperties", "maxProperties",
    "items", "minItems", "maxItems", "minLength", "maxLength", "pattern",
    "minimum", "maximum", "anyOf",
})
# fmt: on


def llm_parameters(tool: Tool) -> dict[str, Any]:
    """The tool's parameter schema without its context parameters."""
    bound = {parameter.name for parameter in tool.context_parameters}
    schema = dict(tool.parameters)
    properties = schema.get("properties", {})
    schema["properties"] = {k: v for k, v in properties.items() if k not in bound}
    required = [name for name in schema.pop("required", []) if name not in bound]
    if required:
        schema["required"] = required
    return schema


def openai(tools: list[Tool]) -> list[dict[str, Any]]:
    """Chat Completions ``tools``: ``{"type": "function", "function": {...}}`` each."""
    return [
        {
            "type": "function",
            "function": {
                "name": t.name,
                "description": t.description,
                "parameters": llm_parameters(t),
            },
        }
        for t in tools
    ]


def anthropic(tools: list[Tool]) -> list[dict[str, Any]]:
    """Messages API ``tools``: ``{"name", "description", "input_schema"}`` each."""
    return [
        {"name": t.name, "description": t.description, "input_schema": llm_parameters(t)}
        for t in tools
    ]


def gemini(tools: list[Tool]) -> list[dict[str, Any]]:
    """``generateContent`` ``tools``: one Tool object holding every function declaration."""
    declarations = [_gemini_declaration(t) for t in tools]
    return [{"functionDeclarations": declarations}] if declarations else []


def gemini_schema(schema: Any) -> Any:
    """A JSON Schema cut down to the keys Gemini's Schema accepts, and typed, recursively."""
    if not isinstance(schema, dict):
        return schema
    kept: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "properties":
            kept[key] = {name: gemini_schema(sub) for name, sub in value.items()}
        elif key == "items":
            kept[key] = gemini_schema(value)
        elif key == "anyOf":
            kept[key] = [gemini_schema(sub) for sub in value]
        elif key in GEMINI_SCHEMA_KEYS:
            kept[key] = value
    return _typed(_string_enum(_nullable(kept)))


def _gemini_declaration(tool: Tool) -> dict[str, Any]:
    declaration: dict[str, Any] = {"name": tool.name, "description": tool.description}
    parameters = gemini_schema(llm_parameters(tool))
    # Gemini rejects an OBJECT schema with no properties; a function without
    # parameters leaves ``parameters`` out instead.
    if parameters["properties"]:
        declaration["parameters"] = parameters
    return declaration


def _typed(schema: dict[str, Any]) -> dict[str, Any]:
    """Gemini requires a type, so an untyped schema ("any value") gets the nearest one.

    Platforms such as Bland declare parameters by description alone; the LLM of
    a voice agent fills those with what was said, so text is the faithful type.
    """
    if "type" in schema or "anyOf" in schema:
        return schema
    nearest = "object" if "properties" in schema else "array" if "items" in schema else "string"
    return {"type": nearest, **schema}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """``"type": ["string", "null"]`` becomes OpenAPI's ``"type": "string", "nullable": true``."""
    types = schema.get("type")
    if isinstance(types, list) and "null" in types and len(types) == 2:
        schema["type"] = next(t for t in types if t != "null")
        schema["nullable"] = True
    return schema


def _string_enum(schema: dict[str, Any]) -> dict[str, Any]:
    """Gemini's enum lists a STRING's values only: null in it becomes ``nullable``, and an
    enum of other values (a python tool's ``Literal[1, 2]``) is left out, checked only when
    the arguments are."""
    values = schema.get("enum")
    if not isinstance(values, list):
        return schema
    if None in values:
        schema["nullable"] = True
        values = [value for value in values if value is not None]
    if values and all(isinstance(value, str) for value in values):
        schema["enum"] = values
    else:
        del schema["enum"]
    return schema


_RENDERERS: dict[Format, Callable[[list[Tool]], list[dict[str, Any]]]] = {
    "openai": openai,
    "anthropic": anthropic,
    "gemini": gemini,
}


def render(fmt: Format, tools: list[Tool]) -> list[dict[str, Any]]:
    """The ``tools`` value for the provider named by ``fmt``."""
    return _RENDERERS[fmt](tools)
