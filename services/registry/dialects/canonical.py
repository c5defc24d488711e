"""Candidate documents in the canonical shape, validated into ``Tool`` objects.

Every dialect ends here, so ``shared.tools`` stays the one place where a tool's
rules live and every dialect reports a broken tool the same way.
"""

from typing import Any

from pydantic import TypeAdapter, ValidationError

from shared.http_api import ApiError, describe_validation
from shared.tools import Tool

# Validating a mapping labelled ``tools[i]`` makes every error path start with the tool's index.
_LABELLED_TOOLS = TypeAdapter(dict[str, Tool])


def validate(candidates: list[Any]) -> list[Tool]:
    """The tools, or one 422 naming every tool (``tools[i]``) and field that is wrong."""
    labelled = {f"tools[{index}]": candidate for index, candidate in enumerate(candidates)}
    try:
        return list(_LABELLED_TOOLS.validate_python(labelled).values())
    except ValidationError as exc:
        message, details = describe_validation(exc)
        raise ApiError(422, "invalid_tool", message, details) from exc
