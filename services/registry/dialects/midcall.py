"""``midcall``: the canonical tool itself, as a tool object, a list or ``{"tools": [...]}``."""

from typing import Any

from services.registry.dialects.canonical import validate
from shared.tools import Tool


def parse(document: Any) -> list[Tool]:
    if isinstance(document, dict) and document.keys() == {"tools"}:
        document = document["tools"]
    return validate(document if isinstance(document, list) else [document])


def export(tool: Tool) -> dict[str, Any]:
    return tool.model_dump(mode="json")
