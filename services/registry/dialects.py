"""Tool documents in the dialects the registry accepts, normalized to canonical tools.

This is the seam for foreign dialects: each one turns its own document into
``Tool`` objects, and all validation stays in ``shared.tools``. Only
``midcall`` (the canonical form) exists so far.
"""

from collections.abc import Callable
from typing import Any

from pydantic import TypeAdapter, ValidationError

from shared.http_api import ApiError, describe_validation
from shared.tools import Tool

MIDCALL = "midcall"
# The seed platforms' own formats: part of the contract, not implemented yet.
PLANNED = ("vocode", "bland", "aivoco", "xml", "callkaro")
DIALECTS = (MIDCALL, *PLANNED)

# Validating a mapping labelled ``tools[i]`` makes every error path start with the tool's index.
_LABELLED_TOOLS = TypeAdapter(dict[str, Tool])


def require(dialect: str) -> None:
    """Reject a dialect before its document is read: unknown (400) or not implemented yet (422)."""
    if dialect in PLANNED:
        raise ApiError(
            422,
            "unsupported_dialect",
            f"dialect '{dialect}' is not implemented yet; use '{MIDCALL}'",
        )
    if dialect not in _PARSERS:
        raise ApiError(
            400,
            "unknown_dialect",
            f"unknown dialect '{dialect}'; use one of: {', '.join(DIALECTS)}",
        )


def parse(dialect: str, document: Any) -> list[Tool]:
    """The canonical tools a document defines, or an ``ApiError`` saying what is wrong."""
    require(dialect)
    tools = _PARSERS[dialect](document)
    if not tools:
        raise ApiError(422, "invalid_tool", "the document defines no tools")
    _reject_duplicates(tools)
    return tools


def _parse_midcall(document: Any) -> list[Tool]:
    """A tool object, a list of them, or ``{"tools": [...]}``."""
    if isinstance(document, dict) and document.keys() == {"tools"}:
        document = document["tools"]
    items = document if isinstance(document, list) else [document]
    try:
        labelled = _LABELLED_TOOLS.validate_python({f"tools[{i}]": t for i, t in enumerate(items)})
    except ValidationError as exc:
        message, details = describe_validation(exc)
        raise ApiError(422, "invalid_tool", message, details) from exc
    return list(labelled.values())


def _reject_duplicates(tools: list[Tool]) -> None:
    first_index: dict[str, int] = {}
    for index, tool in enumerate(tools):
        if tool.name in first_index:
            raise ApiError(
                422,
                "invalid_tool",
                f"tools[{index}].name: '{tool.name}' is already "
                f"defined by tools[{first_index[tool.name]}] in this document",
            )
        first_index[tool.name] = index


_PARSERS: dict[str, Callable[[Any], list[Tool]]] = {MIDCALL: _parse_midcall}
