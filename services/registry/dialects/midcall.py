"""``midcall``: the canonical tool itself, as a tool object, a list or ``{"tools": [...]}``."""

from typing import Any

from services.registry.dialects.canonical import validate
from shared.tools import Tool


def parse(document: Any) -> list[Tool]:
    return validate(split(document))


def split(document: Any) -> list[Any]:
    """Each tool as posted, in ``parse``'s order."""
    if isinstance(document, dict) and document.keys() == {"tools"}:
        document = document["tools"]
    return document if isinstance(document, list) else [document]


def export(tool: Tool) -> dict[str, Any]:
    return tool.model_dump(mode="json")
