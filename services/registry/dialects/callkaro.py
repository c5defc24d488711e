"""``callkaro``: CallKaro's in-call functions, basic (an API) and advanced (Python).

A basic function calls the customer's API. Each parameter is a key with a
type (``string`` or ``number``) and a description, and all of them are
required. The API answers ``{"status": "success", "data": ...}`` or
``{"status": "error", "message": ...}``.

An advanced function (``{"mode": "advanced", "code": "..."}``) is an
``async def`` of the customer's own: a python tool, whose name, description
and parameters its code says (see ``python_function``). It returns what the
LLM is told, ``{"status": "success", ...}`` as a whole, or
``{"status": "error", "message": ...}``.
"""

from typing import Any

from services.registry.dialects import python_tools, rules
from services.registry.dialects.canonical import validate
from services.registry.dialects.python_function import DEFAULT_MODULES
from shared.contract.tools import Tool

MODES = ("basic", "advanced")
FIELDS = ("mode", "name", "description", "api_url", "method", "headers", "parameters")
ADVANCED_FIELDS = ("mode", "code")
REQUIRED = ("name", "description", "api_url", "method", "parameters")
PARAMETER_FIELDS = ("key", "type", "description")
METHODS = ("GET", "POST", "PUT", "DELETE")
TYPES = ("string", "number")
TOOL_ERROR = {"path": "$.status", "equals": "error", "message_path": "$.message"}
RESPONSE = {"tool_error": TOOL_ERROR, "result_path": "$.data"}
ADVANCED_RESPONSE = {"tool_error": TOOL_ERROR}


def parse(document: Any, modules: frozenset[str] = DEFAULT_MODULES) -> list[Tool]:
    """One function or a list of them (``{"functions": [...]}`` too), basic or advanced.

    ``modules``: what an advanced function may import.
    """
    functions = rules.entries(document, "function", "functions", wrapper="functions")
    read = [_read(label, item, modules) for label, item in functions]
    python_tools.reject([problem for _, problems in read for problem in problems])
    return validate([candidate for candidate, _ in read])


def split(document: Any) -> list[Any]:
    """Each function as posted, in ``parse``'s order."""
    return rules.definitions(document, "function", wrapper="functions")


def export(tool: Tool) -> dict[str, Any]:
    if tool.python is not None:
        return {"mode": "advanced", "code": tool.python.code}
    document = {
        "name": tool.name,
        "description": tool.description,
        "api_url": tool.http().url,
        "method": tool.http().method,
        "headers": tool.http().headers or None,
        "parameters": _parameter_list(tool.parameters),
    }
    return {field: value for field, value in document.items() if value is not None}


def _read(
    label: str, function: dict[str, Any], modules: frozenset[str]
) -> tuple[dict[str, Any], python_tools.Problems]:
    """The canonical candidate a function is, and what is wrong with it."""
    mode = function.get("mode", "basic")
    if mode not in MODES:
        return {}, [f"{label}: mode must be {' or '.join(MODES)}"]
    if mode == "advanced":
        return _advanced(label, function, modules)
    problems = _problems(label, function)
    return ({} if problems else _tool(function)), list(problems)


def _advanced(
    label: str, function: dict[str, Any], modules: frozenset[str]
) -> tuple[dict[str, Any], python_tools.Problems]:
    problems: python_tools.Problems = [*rules.unknown(label, function, ADVANCED_FIELDS)]
    code = function.get("code")
    if not isinstance(code, str):
        return {}, [*problems, f"{label}: code is required: the function's Python source"]
    checked = python_tools.check(code, f"{label}.code", modules)
    if isinstance(checked, list):
        return {}, [*problems, *checked]
    return {**python_tools.candidate(checked, code), "response": ADVANCED_RESPONSE}, problems


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
