"""``callkaro``: CallKaro's basic in-call functions.

Each parameter is a key with a type (``string`` or ``number``) and a
description, and all of them are required. The API answers
``{"status": "success", "data": ...}`` or ``{"status": "error", "message": ...}``.
"""

from typing import Any

from services.registry.dialects import rules
from services.registry.dialects.canonical import validate
from shared.contract.tools import Tool

FIELDS = ("name", "description", "api_url", "method", "headers", "parameters")
REQUIRED = ("name", "description", "api_url", "method", "parameters")
PARAMETER_FIELDS = ("key", "type", "description")
METHODS = ("GET", "POST", "PUT", "DELETE")
TYPES = ("string", "number")
RESPONSE = {
    "tool_error": {"path": "$.status", "equals": "error", "message_path": "$.message"},
    "result_path": "$.data",
}


def parse(document: Any) -> list[Tool]:
    """One function or a list of them."""
    functions = rules.entries(document, "function", "functions")
    rules.reject([problem for label, item in functions for problem in _problems(label, item)])
    return validate([_tool(item) for _, item in functions])


def split(document: Any) -> list[Any]:
    """Each function as posted, in ``parse``'s order."""
    return rules.definitions(document, "function")


def export(tool: Tool) -> dict[str, Any]:
    document = {
        "name": tool.name,
        "description": tool.description,
        "api_url": tool.http().url,
        "method": tool.http().method,
        "headers": tool.http().headers or None,
        "parameters": _parameter_list(tool.parameters),
    }
    return {field: value for field, value in document.items() if value is not None}


def _problems(label: str, function: dict[str, Any]) -> list[str]:
    problems = [*rules.missing(label, function, REQUIRED), *rules.unknown(label, function, FIELDS)]
    if " " in str(function.get("name", "")):
        problems.append(f"{label}: name must not contain spaces")
    if function.get("method", METHODS[0]) not in METHODS:  # a missing one is reported above
        problems.append(f"{label}: method must be one of {', '.join(METHODS)}")
    parameters = function.get("parameters", [])
    if not isinstance(parameters, list):
        return [*problems, f"{label}: parameters must be a list of {{key, type, description}}"]
    return problems + _parameter_problems(label, parameters)


def _parameter_problems(label: str, parameters: list[Any]) -> list[str]:
    keys = [p.get("key") if isinstance(p, dict) else None for p in parameters]
    return [
        problem
        for index, parameter in enumerate(parameters)
        for problem in _parameter_problem(f"{label}: parameters[{index}]", parameter, keys[:index])
    ]


def _parameter_problem(where: str, parameter: Any, earlier_keys: list[Any]) -> list[str]:
    if not isinstance(parameter, dict):
        return [f"{where}: must be an object with key, type and description"]
    problems = rules.unknown(where, parameter, PARAMETER_FIELDS)
    key = parameter.get("key")
    if not (isinstance(key, str) and key):
        problems.append(f"{where}: key is required (a non-empty string)")
    elif key in earlier_keys:
        problems.append(f"{where}: key '{key}' is repeated")
    if parameter.get("type") not in TYPES:
        problems.append(f"{where}: type must be {' or '.join(TYPES)}")
    return problems


def _tool(function: dict[str, Any]) -> dict[str, Any]:
    parameters = function["parameters"]
    return {
        "name": function["name"],
        "description": function["description"],
        "parameters": {
            "type": "object",
            "properties": {p["key"]: _property(p) for p in parameters},
            "required": [p["key"] for p in parameters],
        },
        "request": {
            "url": function["api_url"],
            "method": function["method"],
            "headers": function.get("headers", {}),
        },
        "response": RESPONSE,
    }


def _property(parameter: dict[str, Any]) -> dict[str, Any]:
    description = parameter.get("description")
    return {
        "type": parameter["type"],
        **({} if description is None else {"description": description}),
    }


def _parameter_list(parameters: dict[str, Any]) -> list[dict[str, Any]]:
    """Best effort: what does not fit shows when the result is parsed back."""
    return [
        {"key": key, **(schema if isinstance(schema, dict) else {})}
        for key, schema in parameters.get("properties", {}).items()
    ]
