"""A python tool's parameter annotations as JSON Schema, read from the syntax tree.

The types a tool may take are those whose values JSON carries: ``str``, ``int``,
``float``, ``bool``, ``dict``, ``list`` (with ``typing``'s spellings), ``Any``,
``Literal[...]`` and ``X | None``. Nothing is imported or evaluated: an
annotation written as a string is parsed, never run.
"""

import ast
import json
from typing import Any

TYPE_CHOICES = "str, int, float, bool, dict, list, Any, Literal[...] or X | None"
DICTS = frozenset({"dict", "Dict"})
# What ast.literal_eval raises; the last two on absurdly large or deeply nested literals.
LITERAL_ERRORS = (ValueError, TypeError, SyntaxError, MemoryError, RecursionError)

_SCALARS = {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}
_CONTAINERS = {"dict": "object", "Dict": "object", "list": "array", "List": "array"}


def schema(node: ast.expr) -> dict[str, Any] | None:
    """JSON Schema for a parameter annotation; None if a tool cannot take that type."""
    if string(node) is not None:
        parsed = unstring(node)
        return None if parsed is None else schema(parsed)
    name = type_name(node)
    if name in _SCALARS or name in _CONTAINERS:
        return {"type": _SCALARS.get(name) or _CONTAINERS[name]}
    if name == "Any":
        return {}
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _optional(node.left, node.right)
    if isinstance(node, ast.Subscript):
        args = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        return _generic(type_name(node.value), args)
    return None


def fits(value: Any, schema: dict[str, Any]) -> bool:
    """Whether a JSON value matches a schema that ``schema`` built."""
    if "anyOf" in schema:
        return any(fits(value, option) for option in schema["anyOf"])
    kind = json_type(value)
    if "enum" in schema:
        return any(kind == json_type(item) and value == item for item in schema["enum"])
    allowed = schema.get("type", [kind])
    allowed = [allowed] if isinstance(allowed, str) else allowed
    if kind not in allowed and not (kind == "integer" and "number" in allowed):
        return False
    if isinstance(value, list) and "items" in schema:
        return all(fits(item, schema["items"]) for item in value)
    if isinstance(value, dict) and "additionalProperties" in schema:
        return all(fits(item, schema["additionalProperties"]) for item in value.values())
    return True


def default(node: ast.expr, typed: dict[str, Any]) -> tuple[Any, str]:
    """A parameter's default as a JSON value, and what is wrong with it ("" if nothing)."""
    try:
        value = ast.literal_eval(node)
        is_json = json.loads(json.dumps(value, allow_nan=False)) == value
    except LITERAL_ERRORS:
        is_json = False
    if not is_json:
        return None, " must be a literal JSON value"
    if not fits(value, typed):
        return value, f", {ast.unparse(node)}, does not match its type"
    return value, ""


def is_literal(node: ast.expr) -> bool:
    try:
        ast.literal_eval(node)
    except LITERAL_ERRORS:
        return False
    return True


def type_name(node: ast.expr | None) -> str:
    """``X`` for an annotation written ``X`` or ``typing.X``; "" for anything else."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        return node.attr if node.value.id == "typing" else ""
    return ""


def string(node: ast.expr | None) -> str | None:
    """The text of a string constant; None for any other expression."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def is_none(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and node.value is None


def unstring(node: ast.expr | None) -> ast.expr | None:
    """The expression a string annotation stands for; other annotations unchanged."""
    text = string(node)
    if text is None:
        return node
    try:
        return ast.parse(text.strip(), mode="eval").body
    except (SyntaxError, ValueError, MemoryError):
        return None


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    kinds = [(bool, "boolean"), (int, "integer"), (float, "number"), (str, "string")]
    kinds.append((list, "array"))
    return next((kind for type_, kind in kinds if isinstance(value, type_)), "object")


def _generic(name: str, args: list[ast.expr]) -> dict[str, Any] | None:
    if name in {"list", "List"} and len(args) == 1:
        return _container("array", "items", args[0])
    if name in DICTS and len(args) == 2 and schema(args[0]) == {"type": "string"}:
        return _container("object", "additionalProperties", args[1])
    if name == "Optional" and len(args) == 1:
        return _optional(args[0], ast.Constant(None))
    if name == "Union" and len(args) == 2:
        return _optional(*args)
    if name == "Literal":
        return _literal(args)
    return None


def _container(kind: str, key: str, element: ast.expr) -> dict[str, Any] | None:
    inner = schema(element)
    if inner is None:
        return None
    return {"type": kind, key: inner} if inner else {"type": kind}


def _optional(first: ast.expr, second: ast.expr) -> dict[str, Any] | None:
    """``X | None`` in any spelling: X's schema, also allowing null."""
    inner = first if is_none(second) else second if is_none(first) else None
    typed = None if inner is None else schema(inner)
    if typed is None or typed == {}:
        return typed  # not a type a tool takes, or Any, which null already is
    if isinstance(typed.get("type"), str):
        typed["type"] = [typed["type"], "null"]
    if "enum" in typed and None not in typed["enum"]:
        typed["enum"] = [*typed["enum"], None]
    return typed


def _literal(args: list[ast.expr]) -> dict[str, Any] | None:
    if not args or not all(is_literal(arg) for arg in args):
        return None
    values = [ast.literal_eval(arg) for arg in args]
    kinds = {json_type(value) for value in values}
    if not kinds <= {"string", "integer", "number", "boolean"}:
        return None
    return {"type": kinds.pop(), "enum": values} if len(kinds) == 1 else {"enum": values}
