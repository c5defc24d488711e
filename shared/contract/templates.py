"""``{{root.path}}`` templates: parsing and type-preserving rendering.

Nothing is evaluated: a template names a value by a dotted path and that is
all. A string that is exactly one template keeps the value's JSON type; a
template inside a longer string is rendered as text.
"""

import json
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final

TEMPLATE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_\-]+)*)\s*\}\}")

# Roots a template may name, and whether the bare root (no path) is allowed.
ROOTS: Final = {
    "input": True,
    "context": True,
    "secrets": False,
    "call": False,
    "conversation": False,
}
FIXED_PATHS: Final = {"call": {"id"}, "conversation": {"id"}}


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()
"""What a whole-value template renders to when its value is absent."""


def references(value: Any) -> Iterator[str]:
    """Every template reference in a JSON-like value, e.g. ``input.date``."""
    if isinstance(value, str):
        yield from (match.group(1) for match in TEMPLATE.finditer(value))
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from references(key)
            yield from references(item)
    elif isinstance(value, list):
        for item in value:
            yield from references(item)


def reference_problem(reference: str) -> str | None:
    """Why a reference is not allowed, or None when it is."""
    root, _, path = reference.partition(".")
    if root not in ROOTS:
        return f"unknown template root '{root}' (use one of: {', '.join(ROOTS)})"
    if not path and not ROOTS[root]:
        return f"'{{{{{root}}}}}' needs a path, e.g. '{{{{{root}.{_example(root)}}}}}'"
    if root in FIXED_PATHS and path and path not in FIXED_PATHS[root]:
        return f"'{reference}' is not known; '{root}' has only: {', '.join(FIXED_PATHS[root])}"
    return None


def _example(root: str) -> str:
    return next(iter(FIXED_PATHS.get(root, {"NAME"})))


def lookup(scope: Mapping[str, Any], reference: str) -> Any:
    """The value a reference names in ``scope``, or MISSING."""
    value: Any = scope
    for part in reference.split("."):
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return MISSING
    return value


def as_text(value: Any) -> str:
    """How a value reads inside a longer string."""
    if value is MISSING or value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def render_string(
    template: str, scope: Mapping[str, Any], escape: Callable[[str], str] = str
) -> Any:
    """Render one string: a whole-value template keeps its type (or is MISSING)."""
    whole = TEMPLATE.fullmatch(template)
    if whole:
        return lookup(scope, whole.group(1))
    return TEMPLATE.sub(lambda m: escape(as_text(lookup(scope, m.group(1)))), template)


def render_value(value: Any, scope: Mapping[str, Any]) -> Any:
    """Render a JSON-like value; keys and items whose whole value is MISSING are left out."""
    if isinstance(value, str):
        return render_string(value, scope)
    if isinstance(value, Mapping):
        rendered = {
            as_text(render_string(k, scope)): render_value(v, scope) for k, v in value.items()
        }
        return {k: v for k, v in rendered.items() if v is not MISSING}
    if isinstance(value, list):
        return [item for item in (render_value(v, scope) for v in value) if item is not MISSING]
    return value
