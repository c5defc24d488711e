"""A python tool's docstring, Google style: the summary and the ``Args:`` entries.

The summary is what the LLM is told the tool does; each parameter's entry
under ``Args:`` is what it is told about that parameter.
"""

import inspect
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import dropwhile, takewhile

_SECTION_HEADER = re.compile(r"[A-Za-z][A-Za-z ]*:")
# ``name: text`` or ``name (type): text``.
_ARG_ENTRY = re.compile(r"([A-Za-z_]\w*)\s*(?:\([^)]*\))?\s*:(.*)")


@dataclass(frozen=True)
class Docstring:
    # The first paragraph, joined into one line ("" when there is none).
    summary: str = ""
    # Each ``Args:`` entry: name -> (its line in the code, its text, continuation lines joined).
    args: dict[str, tuple[int, str]] = field(default_factory=dict)


def read(raw: str | None, line: int) -> Docstring:
    """The docstring ``raw`` (None: the function has none), which starts on ``line``."""
    if raw is None:
        return Docstring()
    blank_lines_before = raw[: len(raw) - len(raw.lstrip())].count("\n")
    lines = list(dropwhile(lambda text: not text.strip(), inspect.cleandoc(raw).split("\n")))
    summary = " ".join(text.strip() for text in takewhile(_in_summary, lines))
    return Docstring(summary, _args_entries(lines, line + blank_lines_before))


def _in_summary(line: str) -> bool:
    return bool(line.strip()) and not _SECTION_HEADER.fullmatch(line.strip())


def _args_entries(lines: list[str], first_line: int) -> dict[str, tuple[int, str]]:
    section = list(_section_lines(lines, "Args:", first_line))
    entries: dict[str, tuple[int, str]] = {}
    name = ""
    for number, indent, text in section:
        entry = _ARG_ENTRY.fullmatch(text)
        if indent == section[0][1] and entry:
            name = entry[1]
            entries[name] = (number, entry[2].strip())
        elif indent > section[0][1] and name:
            line, description = entries[name]
            entries[name] = (line, f"{description} {text}".strip())
    return entries


def _section_lines(
    lines: list[str], header: str, first_line: int
) -> Iterator[tuple[int, int, str]]:
    """The non-blank lines indented under a header, as (line number, indent, text)."""
    start = next((i for i, line in enumerate(lines) if line.strip() == header), None)
    if start is None:
        return
    header_indent = _indent(lines[start])
    for number, line in enumerate(lines[start + 1 :], start=first_line + start + 1):
        if line.strip() and _indent(line) <= header_indent:
            return
        if line.strip():
            yield number, _indent(line), line.strip()


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())
