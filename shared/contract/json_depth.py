"""How deeply a document nests, checked before anything recurses into it.

Parsers, ``json.dumps``, jsonschema and pydantic all recurse once per level of
nesting, so a small document nested a thousand deep exhausts the stack (a
``RecursionError``, a 500). No tool document or schema needs more than a few
levels; everything we parse is held to ``MAX_DEPTH``, checked here without
recursion.
"""

import json
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

MAX_DEPTH = 32

# A JSON string (skipped whole, brackets inside it are text) or a bracket.
_TOKENS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)
_OPENING = (b"[", b"{")
_CLOSING = (b"]", b"}")

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


def shallow(text: bytes, limit: int = MAX_DEPTH) -> bytes:
    """``text`` with each array or object past ``limit`` levels replaced by ``null``.

    Read from the raw bytes, without parsing or recursion, so that what is left
    can be given to parsers that recurse a level per level, however deep the
    original. ``text`` unchanged when nothing in it is that deep.
    """
    if text.count(b"[") + text.count(b"{") <= limit:  # too few brackets to nest that deep
        return text
    pieces, kept = [], 0
    for start, end in _too_deep_spans(text, limit):
        pieces += [text[kept:start], b"null"]
        kept = end
    return b"".join([*pieces, text[kept:]]) if pieces else text


def _too_deep_spans(text: bytes, limit: int) -> Iterator[tuple[int, int]]:
    """Where each outermost array or object past ``limit`` levels starts and ends.

    One left open runs to the end of ``text`` (which is then not JSON anyway).
    """
    depth = start = 0
    for token in _TOKENS.finditer(text):
        if token[0] in _OPENING:
            depth += 1
            if depth == limit + 1:
                start = token.start()
        elif token[0] in _CLOSING:
            if depth == limit + 1:
                yield start, token.end()
            depth -= 1
    if depth > limit:
        yield start, len(text)
