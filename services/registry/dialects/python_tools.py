"""Python tools in tool documents: the code checked, and the tool read from it.

CallKaro's advanced functions and canonical tools of ``"kind": "python"`` both
come here, so a function makes the same tool whichever dialect brings it, and
what is wrong with its code reads the same: each problem names where the code
is in the document, the rule it breaks and the line of the code.
"""

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from services.registry.dialects.python_function import (
    PythonFunction,
    PythonToolError,
    parse_function,
)
from shared.process.http_api import ApiError

# What a canonical python tool may leave out for the code to say, and what the code says it is.
DERIVED = {
    "description": "the docstring's summary",
    "parameters": "what the function's signature and its docstring's Args: say",
    "python.function": "the name of the code's first top-level function, the tool",
    "python.secrets": 'what the code reads (ctx.secrets["NAME"])',
}


@dataclass(frozen=True)
class CodeProblem:
    """A rule the code breaks: ``at`` is where the code is in the document."""

    at: str
    rule: str
    # 1-based, in the code; 0 when the problem is about no one line (the code's size).
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.at}: [{self.rule}] {self.message}"


Problems = list[str | CodeProblem]


def check(code: str, at: str, modules: frozenset[str]) -> PythonFunction | list[CodeProblem]:
    """The function the code defines, or every problem of the code (never empty)."""
    try:
        return parse_function(code, modules)
    except PythonToolError as exc:
        return [CodeProblem(at, p.rule, p.line, p.message) for p in exc.problems]


def candidate(function: PythonFunction, code: str) -> dict[str, Any]:
    """The canonical tool (to be validated) that the checked ``code`` is."""
    return {
        "name": function.name,
        "description": function.description,
        "parameters": function.parameters,
        "kind": "python",
        "python": {"code": code, "function": function.name, "secrets": list(function.secrets)},
    }


def complete(document: Any, at: str, modules: frozenset[str]) -> tuple[Any, Problems]:
    """A canonical tool document with what its code says filled in where it is left out.

    Given, those fields must be what the code says: one source, so the LLM is
    told what the function takes, and the function is given only the secrets
    it reads. Anything but a python tool with code is left to validation.
    """
    code = _code(document)
    if code is None:
        return document, []
    checked = check(code, f"{at}.python.code", modules)
    if isinstance(checked, list):
        return document, list(checked)
    derived = candidate(checked, code)
    completed = {"name": checked.name, **document, "python": dict(document["python"])}
    problems: Problems = []
    for path in DERIVED:
        problems += _fill(completed, path, derived, at)
    return completed, problems


def reject(problems: Sequence[str | CodeProblem]) -> None:
    """One 422 listing every problem, if there are any: a problem with the code as
    ``{"at", "rule", "line", "message"}`` in ``details``, any other as its sentence."""
    if problems:
        details = [p if isinstance(p, str) else asdict(p) for p in problems]
        raise ApiError(422, "invalid_tool", "; ".join(map(str, problems)), details)


def _code(document: Any) -> str | None:
    if not (isinstance(document, dict) and document.get("kind") == "python"):
        return None
    python = document.get("python")
    code = python.get("code") if isinstance(python, dict) else None
    return code if isinstance(code, str) else None


def _fill(document: dict[str, Any], path: str, derived: dict[str, Any], at: str) -> list[str]:
    """Set the field at ``path`` (``a`` or ``a.b``) to the derived value if it is left out;
    a problem if it is given otherwise."""
    *parents, field = path.split(".")
    given, expected = document, derived
    for parent in parents:
        given, expected = given[parent], expected[parent]
    if field not in given:
        given[field] = expected[field]
    elif not _same(path, given[field], expected[field]):
        said = json.dumps(expected[field], ensure_ascii=False)
        return [f"{at}.{path} must be {DERIVED[path]}: {said}; or leave it out"]
    return []


def _same(path: str, given: Any, derived: Any) -> bool:
    # Secrets are a set: listed in any order, or twice, they are still the same secrets.
    names = isinstance(given, list) and all(isinstance(name, str) for name in given)
    if path == "python.secrets" and names:
        given = sorted(set(given))
    return bool(given == derived)
