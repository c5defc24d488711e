"""How deeply a document nests, checked before anything recurses into it.

Parsers, ``json.dumps``, jsonschema and pydantic all recurse once per level of
nesting, so a small document nested a thousand deep exhausts the stack (a
``RecursionError``, a 500). No tool document or schema needs more than a few
levels; everything we parse is held to ``MAX_DEPTH``, checked here without
recursion.
"""

import json
from collections.abc import Callable, Iterable
from typing import Any

MAX_DEPTH = 32

Children = Callable[[Any], Iterable[Any] | None]
"""A node's children, or None for a leaf (which adds no level)."""


class TooDeep(Exception):
    """A document nested deeper than its limit; the message says so in a sentence."""

    def __init__(self, subject: str, limit: int = MAX_DEPTH) -> None:
        super().__init__(too_deep(subject, limit))
        self.limit = limit


def too_deep(subject: str, limit: int = MAX_DEPTH) -> str:
    return f"{subject} is nested deeper than the limit of {limit} levels"


def json_children(value: Any) -> Iterable[Any] | None:
    """Objects and arrays are levels; strings, numbers, booleans and null are not."""
    if isinstance(value, dict):
        return value.values()
    if isinstance(value, list):
        return value
    return None


def nests_deeper(root: Any, limit: int = MAX_DEPTH, children: Children = json_children) -> bool:
    """Whether ``root`` has more than ``limit`` levels (``{}`` is one, ``{"a": []}`` two).

    A stack instead of recursion, and it stops at the first node past the limit.
    """
    stack = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        inner = children(node)
        if inner is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in inner)
    return False


def check_depth(root: Any, subject: str, limit: int = MAX_DEPTH) -> None:
    """Raise ``TooDeep`` naming ``subject`` when the JSON value ``root`` nests past ``limit``."""
    if nests_deeper(root, limit):
        raise TooDeep(subject, limit)


def loads(text: str | bytes, subject: str, limit: int = MAX_DEPTH) -> Any:
    """``json.loads``, with too deep a document a ``TooDeep`` (``ValueError`` if not JSON).

    The decoder recurses too: far past the limit it raises ``RecursionError``
    before we can count, which is the same mistake.
    """
    try:
        value = json.loads(text)
    except RecursionError as exc:
        raise TooDeep(subject, limit) from exc
    check_depth(value, subject, limit)
    return value
