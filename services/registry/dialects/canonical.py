"""Candidate documents in the canonical shape, validated into ``Tool`` objects.

Every dialect ends here, so ``shared.contract.tools`` stays the one place where a tool's
rules live and every dialect reports a broken tool the same way.
"""

from typing import Any

from pydantic import TypeAdapter, ValidationError

from shared.contract.tools import INTERNAL_FIELDS, Tool
from shared.process.http_api import ApiError, describe_validation, well_formed_text

# Validating a mapping labelled ``tools[i]`` makes every error path start with the tool's index.
_LABELLED_TOOLS = TypeAdapter(dict[str, Tool])


def validate(candidates: list[Any]) -> list[Tool]:
    """The tools, or one 422 naming every tool (``tools[i]``) and field that is wrong."""
    labelled = {f"tools[{index}]": candidate for index, candidate in enumerate(candidates)}
    _reject_internal_fields(labelled)
    _reject_lone_surrogates(labelled)
    try:
        return list(_LABELLED_TOOLS.validate_python(labelled).values())
    except ValidationError as exc:
        message, details = describe_validation(exc)
        raise ApiError(422, "invalid_tool", message, details) from exc


def _reject_lone_surrogates(labelled: dict[str, Any]) -> None:
    """A JSON escape may carry a lone surrogate, which nothing downstream can encode."""
    stack: list[tuple[str, Any]] = list(labelled.items())
    while stack:  # no recursion: the depth was limited, but a walk needs no stack frames
        path, value = stack.pop()
        texts = [value] if isinstance(value, str) else []
        if isinstance(value, dict):
            texts = [key for key in value if isinstance(key, str)]
            stack += [(f"{path}.{key}", item) for key, item in value.items()]
        elif isinstance(value, list):
            stack += [(f"{path}[{index}]", item) for index, item in enumerate(value)]
        for text in texts:
            try:
                well_formed_text(text)
            except ValueError as exc:
                raise ApiError(422, "invalid_tool", f"{path}: {exc}") from None


def _reject_internal_fields(labelled: dict[str, Any]) -> None:
    # The registry sets them from the key a tool is posted with; a document saying
    # "platform": true must not make a tool that may use the platform's secrets.
    posted = [
        (label, name)
        for label, candidate in labelled.items()
        if isinstance(candidate, dict)
        for name in sorted(INTERNAL_FIELDS & candidate.keys())
    ]
    if posted:
        why = "set by the registry, not by a tool document"
        message = "; ".join(f"{label}.{name}: {why}" for label, name in posted)
        details = [{"loc": [label, name], "msg": why, "type": "internal"} for label, name in posted]
        raise ApiError(422, "invalid_tool", message, details)
