"""Checks the JSON dialects share; each returns its problems as sentences.

A foreign document is checked as a whole before anything is built from it, so
its author sees every mistake at once, in the platform's own field names.
"""

from collections.abc import Iterable
from typing import Any

from shared.contract.json_depth import TooDeep
from shared.process.http_api import ApiError

Entry = tuple[str, dict[str, Any]]
"""One definition in a document, with the label its problems are reported under."""


def invalid(message: str) -> ApiError:
    return ApiError(422, "invalid_tool", message)


def document_too_deep(exc: TooDeep) -> ApiError:
    """Its own code: no tool of a document nested this deep is read, so none can be named."""
    return ApiError(422, "document_too_deep", str(exc), {"limit": exc.limit})


def reject(problems: list[str]) -> None:
    """Raise one 422 listing every problem (also as ``details``), if there are any."""
    if problems:
        raise ApiError(422, "invalid_tool", "; ".join(problems), problems)


def definitions(document: Any, noun: str, wrapper: str | None = None) -> list[Any]:
    """The definitions of a document as posted: one object, a list, or ``{wrapper: [...]}``.

    Also each tool's own source, in the order its tool is parsed.
    """
    found = document
    if wrapper is not None and isinstance(document, dict) and wrapper in document:
        found = document[wrapper]
        if not isinstance(found, list):
            raise invalid(f"{wrapper} must be a list of {noun} objects")
    return found if isinstance(found, list) else [found]


def entries(document: Any, noun: str, plural: str, wrapper: str | None = None) -> list[Entry]:
    """The definitions of a document (see ``definitions``), checked to be objects.

    Null fields count as absent, as the platforms treat them.
    """
    found = definitions(document, noun, wrapper)
    reject(
        [
            f"{plural}[{i}] must be a JSON object"
            for i, item in enumerate(found)
            if not isinstance(item, dict)
        ]
    )
    return [(_label(item, i, noun, plural), _without_nulls(item)) for i, item in enumerate(found)]


def missing(label: str, entry: dict[str, Any], required: Iterable[str]) -> list[str]:
    return [
        f"{label}: missing required field '{field}'" for field in required if field not in entry
    ]


def unknown(label: str, entry: dict[str, Any], known: tuple[str, ...]) -> list[str]:
    listed = ", ".join(known)
    return [
        f"{label}: unknown field '{field}' (fields: {listed})"
        for field in entry
        if field not in known
    ]


def _label(item: dict[str, Any], index: int, noun: str, plural: str) -> str:
    name = item.get("name")
    return f"{noun} '{name}'" if isinstance(name, str) and name else f"{plural}[{index}]"


def _without_nulls(item: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in item.items() if value is not None}
