"""``midcall``: the canonical tool itself, as a tool object, a list or ``{"tools": [...]}``.

A python tool (``"kind": "python"``) may leave out what its code says
(``python_tools.DERIVED``, and its name: the function's).
"""

from typing import Any

from services.registry.dialects import python_tools
from services.registry.dialects.canonical import validate
from services.registry.dialects.python_function import DEFAULT_MODULES
from shared.contract.tools import Tool
from shared.security.account_secrets import referenced_name

REDACTED = "***"


def parse(document: Any, modules: frozenset[str] = DEFAULT_MODULES) -> list[Tool]:
    """``modules``: what a python tool's code may import."""
    completed = [
        python_tools.complete(candidate, f"tools[{index}]", modules)
        for index, candidate in enumerate(split(document))
    ]
    python_tools.reject([problem for _, problems in completed for problem in problems])
    return validate([candidate for candidate, _ in completed])


def split(document: Any) -> list[Any]:
    """Each tool as posted, in ``parse``'s order."""
    if isinstance(document, dict) and document.keys() == {"tools"}:
        document = document["tools"]
    return document if isinstance(document, list) else [document]


def export(tool: Tool) -> dict[str, Any]:
    return tool.public_dump()


def redact(document: dict[str, Any]) -> dict[str, Any]:
    """Signing secrets kept as literals (tools stored before account secrets) as ``***``.

    References (``{{secrets.NAME}}``) are shown: they name a secret, never hold one.
    """
    signing = document.get("request", {}).get("signing")
    if not signing:
        return document
    masked = [s if referenced_name(s) else REDACTED for s in signing["secrets"]]
    request = {**document["request"], "signing": {**signing, "secrets": masked}}
    return {**document, "request": request}
