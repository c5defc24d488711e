"""``xml``: the telephony XML ``<Tool>`` verb.

A ``<Tool>`` gives the LLM nothing to fill in: each ``<Parameter>`` names a
value of the voice application's request, bound from ``ToolCall.context``, and
the platform ends the session when one is missing. The executor's default body
(the bound parameters and any arguments as one JSON object) is what is POSTed.
"""

import re
from copy import copy
from typing import Any
from xml.etree.ElementTree import Element, SubElement, indent, tostring
from xml.sax.saxutils import quoteattr

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import ParseError, fromstring

from services.registry.dialects import rules
from services.registry.dialects.canonical import validate
from shared.contract.json_depth import TooDeep, nests_deeper
from shared.contract.tools import TOOL_NAME_PATTERN, ContextParameter, Tool

MEDIA_TYPE = "application/xml"
TOOL_ATTRIBUTES = ("name", "url")
TOOL_CHILDREN = ("Description", "Parameter")
PARAMETER_ATTRIBUTES = ("name", "description", "type", "required", "values")
TYPES = ("string", "integer", "number", "boolean", "enum")
REQUIRED = {"true": True, "false": False}
TOOL_NAME = re.compile(TOOL_NAME_PATTERN)
ERRORS = {"end_conversation_on": ["missing_context_parameter"]}


def parse(document: Any) -> list[Tool]:
    """A ``<Tool>`` element, or every ``<Tool>`` at any depth of a ``<Response>`` document."""
    tools = list(_root(document).iter("Tool"))
    rules.reject([problem for tool in tools for problem in _tool_problems(tool)])
    return validate([_tool(tool) for tool in tools])


def split(document: Any) -> list[str]:
    """Each ``<Tool>`` as written, in ``parse``'s order, without what follows or surrounds it."""
    return [_written(tool) for tool in _root(document).iter("Tool")]


def export(tool: Tool) -> str:
    element = Element("Tool", {"name": tool.name, "url": tool.http().url})
    if tool.description:
        SubElement(element, "Description").text = tool.description
    for parameter in tool.context_parameters:
        SubElement(element, "Parameter", _attributes(parameter))
    indent(element)
    return tostring(element, encoding="unicode")


def _root(document: Any) -> Element:
    if not isinstance(document, str):
        raise rules.invalid("the xml dialect takes an XML document as text")
    try:
        root: Element = fromstring(document)
    except ParseError as exc:
        raise rules.invalid(f"the document is not well-formed XML: {exc}") from exc
    except DefusedXmlException as exc:
        refused = "XML entities and external references are not accepted"
        raise rules.invalid(f"the document is refused: {refused} ({exc})") from exc
    # Expat does not recurse, but serializing an element (a tool's own source) does.
    if nests_deeper(root, children=list):
        raise rules.document_too_deep(TooDeep("the document"))
    return root


def _written(tool: Element) -> str:
    alone = copy(tool)
    alone.tail = None  # the text after </Tool> belongs to its parent
    return tostring(alone, encoding="unicode")


def _tool_problems(tool: Element) -> list[str]:
    tag = _start_tag(tool)
    problems = [*_unknown(tool, TOOL_ATTRIBUTES), *_missing(tool, TOOL_ATTRIBUTES)]
    problems += [
        f"{tag}: <{child.tag}> does not belong in a <Tool> (use {', '.join(TOOL_CHILDREN)})"
        for child in tool
        if child.tag not in TOOL_CHILDREN
    ]
    if "name" in tool.attrib and not TOOL_NAME.fullmatch(tool.attrib["name"]):
        problems.append(f"{tag}: name must match {TOOL_NAME_PATTERN}")
    parameters = tool.findall("Parameter")
    return problems + [problem for p in parameters for problem in _parameter_problems(p)]


def _parameter_problems(parameter: Element) -> list[str]:
    tag, kind = _start_tag(parameter), parameter.get("type", "string")
    problems = [*_unknown(parameter, PARAMETER_ATTRIBUTES), *_missing(parameter, ("name",))]
    if kind not in TYPES:
        problems.append(f"{tag}: type must be one of {', '.join(TYPES)}")
    if kind == "enum" and not _values(parameter):
        problems.append(f'{tag}: type="enum" needs values, a comma-separated list')
    if kind != "enum" and "values" in parameter.attrib:
        problems.append(f'{tag}: values are only for type="enum"')
    if parameter.get("required", "true").lower() not in REQUIRED:
        problems.append(f"{tag}: required must be true or false")
    return problems


def _unknown(element: Element, known: tuple[str, ...]) -> list[str]:
    listed = ", ".join(known)
    return [
        f"{_start_tag(element)}: unknown attribute '{name}' (attributes: {listed})"
        for name in element.attrib
        if name not in known
    ]


def _missing(element: Element, required: tuple[str, ...]) -> list[str]:
    return [
        f"{_start_tag(element)}: the {name} attribute is required"
        for name in required
        if name not in element.attrib
    ]


def _start_tag(element: Element) -> str:
    """How a problem quotes its element: the start tag as written, less its children."""
    attributes = "".join(f" {name}={quoteattr(value)}" for name, value in element.attrib.items())
    return f"<{element.tag}{attributes}>"


def _tool(tool: Element) -> dict[str, Any]:
    description = tool.find("Description")
    return {
        "name": tool.get("name"),
        "description": (description.text or "").strip() if description is not None else "",
        "parameters": {"type": "object", "properties": {}},
        "context_parameters": [_context_parameter(p) for p in tool.findall("Parameter")],
        "request": {"url": tool.get("url"), "method": "POST"},
        "errors": ERRORS,
    }


def _context_parameter(parameter: Element) -> dict[str, Any]:
    kind = parameter.get("type", "string")
    bound = {
        "name": parameter.get("name"),
        "required": REQUIRED[parameter.get("required", "true").lower()],
        "type": "string" if kind == "enum" else kind,
        "enum": _values(parameter) if kind == "enum" else None,
        "description": parameter.get("description"),
    }
    return {field: value for field, value in bound.items() if value is not None}


def _values(parameter: Element) -> list[str]:
    return [value.strip() for value in parameter.get("values", "").split(",") if value.strip()]


def _attributes(parameter: ContextParameter) -> dict[str, str]:
    attributes = {
        "name": parameter.name,
        "description": parameter.description,
        "type": "enum" if parameter.enum else parameter.type,
        "values": ",".join(parameter.enum) if parameter.enum else None,
        "required": None if parameter.required else "false",
    }
    if attributes["type"] == "string":
        del attributes["type"]
    return {name: value for name, value in attributes.items() if value is not None}
