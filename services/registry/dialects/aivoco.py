"""``aivoco``: Aivoco's agent functions, checked by the rules Aivoco documents.

Aivoco sends GET arguments as the query and other methods' as the JSON body,
which is what the executor does when a tool sets neither; it waits up to 30
seconds. Header values may name arguments as ``{param}``.
"""

import re
from typing import Any

from services.registry.dialects import rules
from services.registry.dialects.canonical import validate
from shared.contract.tools import Tool

FIELDS = ("name", "description", "api_url", "method", "headers", "parameters")
REQUIRED = ("name", "description", "api_url", "method", "parameters")
METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH")
NAME = re.compile(r"[A-Za-z0-9_]+")
# ``{param}`` but not Midcall's own ``{{...}}``, which passes through as a template.
PLACEHOLDER = re.compile(r"(?<!\{)\{([A-Za-z0-9_]+)\}(?!\})")
ARGUMENT = re.compile(r"\{\{input\.([A-Za-z0-9_]+)\}\}")
TIMEOUT_S = 30
ERRORS = {"messages": {"timeout": f"Function timed out after {TIMEOUT_S} seconds"}}


def parse(document: Any) -> list[Tool]:
    """``{"functions": [...]}``, a list of functions, or one function."""
    functions = rules.entries(document, "function", "functions", wrapper="functions")
    rules.reject([problem for label, item in functions for problem in _problems(label, item)])
    return validate([_tool(item) for _, item in functions])


def split(document: Any) -> list[Any]:
    """Each function as posted, in ``parse``'s order."""
    return rules.definitions(document, "function", wrapper="functions")


def export(tool: Tool) -> dict[str, Any]:
    document = {
        "name": tool.name,
        "description": tool.description,
        "api_url": tool.http().url,
        "method": tool.http().method,
        "headers": _with_placeholders(tool.http().headers),
        "parameters": tool.parameters,
    }
    if not document["headers"]:
        del document["headers"]
    return document


def _problems(label: str, function: dict[str, Any]) -> list[str]:
    problems = [*rules.missing(label, function, REQUIRED), *rules.unknown(label, function, FIELDS)]
    checks = {
        "name": _name_problem,
        "method": _method_problem,
        "api_url": _url_problem,
        "parameters": _parameters_problem,
    }
    found = (check(function[field]) for field, check in checks.items() if field in function)
    return problems + [f"{label}: {problem}" for problem in found if problem]


def _name_problem(name: Any) -> str | None:
    valid = isinstance(name, str) and NAME.fullmatch(name)
    return None if valid else "name must contain only letters, digits and underscores"


def _method_problem(method: Any) -> str | None:
    return None if method in METHODS else f"method must be one of {', '.join(METHODS)}"


def _url_problem(url: Any) -> str | None:
    valid = isinstance(url, str) and url.startswith(("http://", "https://"))
    return None if valid else "api_url must start with http:// or https://"


def _parameters_problem(parameters: Any) -> str | None:
    valid = isinstance(parameters, dict) and "properties" in parameters
    return None if valid else "parameters must be an object with a properties field"


def _tool(function: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": function["name"],
        "description": function["description"],
        "parameters": {"type": "object", **function["parameters"]},
        "request": {
            "url": function["api_url"],
            "method": function["method"],
            "headers": _with_templates(function.get("headers", {})),
            "timeout_s": TIMEOUT_S,
        },
        "errors": ERRORS,
    }


def _with_templates(headers: Any) -> Any:
    """``{param}`` becomes ``{{input.param}}``; anything but an object is left for validation."""
    if not isinstance(headers, dict):
        return headers
    return {
        name: PLACEHOLDER.sub(r"{{input.\1}}", value) if isinstance(value, str) else value
        for name, value in headers.items()
    }


def _with_placeholders(headers: dict[str, str]) -> dict[str, str]:
    return {name: ARGUMENT.sub(r"{\1}", value) for name, value in headers.items()}
