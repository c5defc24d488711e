"""Tool documents in the dialects the registry accepts, to and from canonical tools.

Each dialect module parses its platform's documents into ``Tool`` objects
(validated by ``shared.contract.tools``) and renders a tool back. A rendering is given
out only when parsing it gives the same tool again, so each dialect states
what it can express once, in its parser, and a tool that does not fit gets a
409 naming the fields that would be lost. A python tool (its own code) fits
only the dialects whose documents can hold code: midcall and callkaro.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from services.registry.dialects import aivoco, bland, callkaro, midcall, roundtrip, vocode, xml
from services.registry.dialects.python_function import DEFAULT_MODULES
from shared.contract.tools import Tool
from shared.process.http_api import ApiError

JSON = "application/json"


@dataclass(frozen=True)
class Dialect:
    parse: Callable[[Any], list[Tool]]
    export: Callable[[Tool], dict[str, Any] | str]
    # A parsed document's part that defined each tool, in ``parse``'s order (see ``sources``).
    split: Callable[[Any], list[Any]] | None = None
    # How documents in this dialect travel over HTTP, both ways.
    media_type: str = JSON
    # An export as shown: secret-valued fields masked (after the round trip, which
    # must compare the real values).
    redact: Callable[[Any], Any] | None = None
    # Set for a dialect whose documents can hold python tools: ``parse``, also told the
    # modules their code may import.
    parse_python: Callable[[Any, frozenset[str]], list[Tool]] | None = None

    def read(self, document: Any, modules: frozenset[str]) -> list[Tool]:
        """``parse``, with ``modules`` where python tools' code is checked."""
        if self.parse_python is None:
            return self.parse(document)
        return self.parse_python(document, modules)


MIDCALL = "midcall"
_DIALECTS = {
    MIDCALL: Dialect(
        midcall.parse,
        midcall.export,
        midcall.split,
        redact=midcall.redact,
        parse_python=midcall.parse,
    ),
    "vocode": Dialect(vocode.parse, vocode.export, vocode.split, redact=vocode.redact),
    "bland": Dialect(bland.parse, bland.export, bland.split),
    "aivoco": Dialect(aivoco.parse, aivoco.export, aivoco.split),
    "xml": Dialect(xml.parse, xml.export, xml.split, xml.MEDIA_TYPE),
    "callkaro": Dialect(
        callkaro.parse, callkaro.export, callkaro.split, parse_python=callkaro.parse
    ),
}
DIALECTS = tuple(_DIALECTS)
PYTHON_DIALECTS = tuple(name for name, dialect in _DIALECTS.items() if dialect.parse_python)


def require(dialect: str) -> Dialect:
    """The dialect, checked before its document is read: an unknown one is a 400."""
    if dialect not in _DIALECTS:
        raise ApiError(
            400,
            "unknown_dialect",
            f"unknown dialect '{dialect}'; use one of: {', '.join(DIALECTS)}",
        )
    return _DIALECTS[dialect]


def parse(dialect: str, document: Any, modules: frozenset[str] = DEFAULT_MODULES) -> list[Tool]:
    """The canonical tools a document defines, or an ``ApiError`` saying what is wrong.

    ``modules``: what a python tool's code may import.
    """
    tools = require(dialect).read(document, modules)
    if not tools:
        raise ApiError(422, "invalid_tool", "the document defines no tools")
    _reject_duplicates(tools)
    return tools


def sources(dialect: str, document: Any, tools: list[Tool]) -> list[Any]:
    """What each of ``tools`` (parsed from ``document``) keeps as its source, in order.

    Only the part of the document that defined it, which parses back to it:
    a thousand tools each keeping the whole document would store a million.
    A dialect that cannot split a document keeps each tool as it renders it.
    """
    chosen = require(dialect)
    if chosen.split is None:
        return [chosen.export(tool) for tool in tools]
    parts = chosen.split(document)
    if len(parts) != len(tools):  # a dialect whose split and parse disagree: our bug
        raise RuntimeError(f"{dialect} split a document into {len(parts)}, not {len(tools)}")
    return parts


def export(
    dialect: str, tool: Tool, modules: frozenset[str] = DEFAULT_MODULES
) -> dict[str, Any] | str:
    """The tool as ``dialect`` writes it, or a 409 naming what the dialect cannot express.

    Secret values are masked (``***``); the registry's internal fields are left out.
    ``modules``: what a python tool's code may import, to read it back.
    """
    chosen = require(dialect)
    if tool.kind == "python" and chosen.parse_python is None:
        only = " and ".join(PYTHON_DIALECTS)
        reason = f"it is a python tool (a function in its own code), which only {only} can express"
        raise _not_expressible(dialect, tool, reason, ["kind"])
    document = chosen.export(tool)
    try:
        (again,) = chosen.read(document, modules)
    except ApiError as exc:
        raise _not_expressible(dialect, tool, exc.message, exc.details) from exc
    lost = roundtrip.differences(tool.public_dump(), again.public_dump())
    if lost:
        raise _not_expressible(
            dialect, tool, f"{dialect} has no way to say {', '.join(lost)}", lost
        )
    return document if chosen.redact is None else chosen.redact(document)


def show(tool: Tool) -> dict[str, Any]:
    """The canonical tool as REST answers show it: no internal fields, no secret values."""
    return midcall.redact(midcall.export(tool))


def _not_expressible(dialect: str, tool: Tool, reason: str, details: Any) -> ApiError:
    message = f"tool '{tool.name}' cannot be expressed in {dialect}: {reason}"
    return ApiError(409, "not_expressible", message, details)


def _reject_duplicates(tools: list[Tool]) -> None:
    first_index: dict[str, int] = {}
    for index, tool in enumerate(tools):
        if tool.name in first_index:
            raise ApiError(
                422,
                "invalid_tool",
                f"tools[{index}].name: '{tool.name}' is already "
                f"defined by tools[{first_index[tool.name]}] in this document",
            )
        first_index[tool.name] = index
