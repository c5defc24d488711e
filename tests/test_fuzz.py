"""Hypothesis fuzzing of every dialect's parser and every REST endpoint: no 5xx, no crash.

Dialects: arbitrary JSON values (nested up to 50 deep, huge and odd numbers,
lone surrogates, NUL, very long strings) and the examples/ documents mutated at
random paths; for XML, arbitrary text, mutated examples and entity bombs. A
document parses to tools or is refused with an ``ApiError`` in the 4xx range
(what the REST API answers with); a parsed tool can be sent on as JSON, and
renders in its own dialect and in midcall or is refused the same way.

REST: the registry and billing as their services compose them (over a real
nats-server and SQLite), served in-process through ``httpx.ASGITransport``:
every route with garbage path segments, query values, Authorization headers,
bodies and content types, as the admin, as an account and with no key. Every
answer is below 500 and every non-2xx one is ``{"error": {code, message, details}}``;
an exception the app does not handle fails the test with its traceback.

Inputs that once broke something are tried first on every run (``@example`` and
``DOCUMENT_REPRODUCERS``). Runs are reproducible (``derandomize``);
``MIDCALL_FUZZ=deep`` searches twenty times longer with fresh randomness, to
look for new bugs locally.
"""

import asyncio
import base64
import copy
import json
import os
import re
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar
from urllib.parse import quote_from_bytes

import httpx
import hypothesis
import nats
import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy
from pydantic import BaseModel

from services.billing import main as billing_main
from services.billing.main import BillingService
from services.billing.store import UsageStore
from services.registry import dialects
from services.registry import main as registry_main
from services.registry.api import MAX_DOCUMENT_BYTES
from services.registry.dialects import aivoco, bland, callkaro, vocode, xml
from services.registry.failures import DeadLetter, FailureStore
from services.registry.main import RegistryService
from shared.contract import subjects
from shared.contract.addressing import Conversation
from shared.contract.errors import ErrorCode
from shared.contract.events import ID_PATTERN, CallRun, ErrorInfo, ToolCall, ToolCallResult
from shared.contract.tools import (
    ContextParameter,
    ErrorPolicy,
    RequestSpec,
    ResponseSpec,
    RetryPolicy,
    Signing,
    Speech,
    Tool,
    ToolErrorRule,
)
from shared.fabric.conversations import ConversationVariables
from shared.fabric.nats_server import NatsServer
from shared.process.http_api import ApiError
from shared.process.storage import build_engine
from shared.settings import Settings
from tests.dialect_support import example
from tests.factories import usage
from tests.support.keys import ADMIN_KEY

T = TypeVar("T")

# --- Hypothesis profiles --------------------------------------------------------------------

# Registered here, not in a config file, so only this module's tests use them. The REST
# fixtures serve many examples on purpose (starting services per example would take
# minutes), hence the function-scoped-fixture health check is off.
settings.register_profile(
    "midcall-fuzz",
    deadline=None,
    derandomize=True,  # the same examples on every run, so CI is reproducible
    database=None,  # nothing written into the work tree
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)
settings.register_profile(
    "midcall-fuzz-deep", settings.get_profile("midcall-fuzz"), derandomize=False
)
DEEP = os.environ.get("MIDCALL_FUZZ") == "deep"
PROFILE = settings.get_profile("midcall-fuzz-deep" if DEEP else "midcall-fuzz")


def fuzz(examples: int) -> settings:
    """The module's profile with ``examples`` per test (twenty times as many when deep)."""
    return settings(PROFILE, max_examples=examples * 20 if DEEP else examples)


def weighted(*choices: tuple[int, SearchStrategy[T]]) -> SearchStrategy[T]:
    """One of ``choices``, each in proportion to its weight (``one_of`` picks them evenly)."""
    picks = [index for index, (weight, _) in enumerate(choices) for _ in range(weight)]
    return st.sampled_from(picks).flatmap(lambda index: choices[index][1])


def one_of_large(values: list[T]) -> SearchStrategy[T]:
    """``sampled_from`` without the megabytes in the strategy's repr (Hypothesis prints it)."""
    return st.sampled_from(range(len(values))).map(lambda index: values[index])


# --- JSON values ----------------------------------------------------------------------------

# st.text() leaves lone surrogates out, but a JSON body's "\ud800" escape brings one in.
ANY_CHARACTER = st.characters()
# A UTF-8 body decodes to any character but a surrogate: what the XML dialect can be sent.
BODY_CHARACTER = st.characters(codec="utf-8")

ODD_NUMBERS: list[int | float] = [
    0,
    -0.0,
    5e-324,
    1e308,
    -1e308,
    float("inf"),
    float("-inf"),
    float("nan"),
    2**53 + 1,
    2**63,
    -(2**63) - 1,
    2**64,
    10**400,
    10**4299,  # 4300 digits: the most json.loads reads (sys.get_int_max_str_digits)
]
# Strings the parsers and validators give a meaning to: templates, JSONPaths, URLs, enums.
INTERESTING_TEXT = [
    "",
    " ",
    "\x00",
    "\ud800",
    "\udfff",
    "\U0001f600",
    "{{input.x}}",
    "{{input}}",
    "{{secrets.API_KEY}}",
    "{{secrets}}",
    "{{context.From}}",
    "{{call.id}}",
    "{{call.nope}}",
    "{{conversation.id}}",
    "{{nope.x}}",
    "{{",
    "}}",
    "{x}",
    "$",
    "$.a",
    "$..a",
    "$[",
    "$[?(@.a == 1)]",
    "$.a[-1:]",
    "http://",
    "https://example.com/x?y=1#z",
    "http://[::1",
    "ftp://example.com",
    "GET",
    "post",
    "PATCH",
    "muted",
    "object",
    "string",
    "enum",
    "number",
    "true",
    "AxEYgPObeMhQyi1x9GfjYnxugQ0ey0ATsM58KuIbPeU=",
    "whsec_AxEYgPObeMhQyi1x9GfjYnxugQ0ey0ATsM58KuIbPeU=",
    "===",
    "connection_error",
    "timeout",
    "http_5xx",
    "missing_context_parameter",
    "a" * 65,
]
# Appended to a string of a real document: characters each layer may handle differently.
TEXT_EDITS = ["\ud800", "\udc00", "\x00", "\x80", "\u00e9", "\U0001f600", "{{", "}}", " ", "\n"]
LONG_UNITS = ["a", "é", "\x00", "\ud800", "{{input.x}}", "\U0001d11e", "[", "{"]

long_text = st.builds(
    lambda unit, count: unit * count, st.sampled_from(LONG_UNITS), st.integers(1_000, 100_000)
)

scalars: SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.sampled_from(ODD_NUMBERS),
    st.text(ANY_CHARACTER, max_size=20),
    st.sampled_from(INTERESTING_TEXT),
    long_text,
)


def _fields(*models: type[BaseModel]) -> set[str]:
    return {name for model in models for name in model.model_fields}


# Keys the dialects and the canonical tool read, so that random objects reach their checks.
FIELD_NAMES = sorted(
    _fields(
        Tool,
        RequestSpec,
        ResponseSpec,
        Speech,
        ErrorPolicy,
        Signing,
        RetryPolicy,
        ContextParameter,
        ToolErrorRule,
    )
    | set(vocode.FIELDS + bland.FIELDS + aivoco.FIELDS + callkaro.FIELDS)
    | set(callkaro.PARAMETER_FIELDS)
    | {"tools", "functions", "type", "properties", "required", "items", "enum", "$ref"}
    | {"$defs", "pattern", "format", "example", "examples", "additionalProperties", "anyOf"}
)
keys: SearchStrategy[str] = st.one_of(
    st.sampled_from(FIELD_NAMES), st.text(ANY_CHARACTER, max_size=10)
)
json_values: SearchStrategy[Any] = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=5)
    ),
    max_leaves=20,
)


@st.composite
def deeply_nested(draw: st.DrawFn, max_depth: int = 50) -> Any:
    """A value wrapped in up to ``max_depth`` arrays and objects (the API allows 32)."""
    value = draw(scalars)
    for _ in range(draw(st.integers(1, max_depth))):
        value = [value] if draw(st.booleans()) else {draw(keys): value}
    return value


documents: SearchStrategy[Any] = st.one_of(json_values, deeply_nested())

# --- mutations of real documents --------------------------------------------------------------

JsonPath = tuple[str | int, ...]


def node_paths(root: Any) -> list[JsonPath]:
    """Every node's path, the root's first; without recursion, as a fuzzed value may be deep."""
    paths: list[JsonPath] = []
    stack: list[tuple[JsonPath, Any]] = [((), root)]
    while stack:
        path, node = stack.pop()
        paths.append(path)
        if isinstance(node, dict):
            stack.extend(((*path, key), child) for key, child in node.items())
        elif isinstance(node, list):
            stack.extend(((*path, index), child) for index, child in enumerate(node))
    return paths


def node_at(root: Any, path: JsonPath) -> Any:
    for step in path:
        root = root[step]
    return root


@st.composite
def mutated(draw: st.DrawFn, seed: Any) -> Any:
    """``seed`` with one to four nodes replaced, deleted, edited or given a new sibling.

    New values are arbitrary, deep, or another part of the same seed (a real field's
    value in the wrong place is likelier to get past the first checks than noise).
    """
    document = copy.deepcopy(seed)
    parts = st.sampled_from(node_paths(seed)).map(lambda path: copy.deepcopy(node_at(seed, path)))
    values = weighted((2, parts), (2, scalars), (1, json_values), (1, deeply_nested()))
    for _ in range(draw(st.sampled_from([1, 1, 1, 2, 2, 3, 4]))):
        path = draw(st.sampled_from(node_paths(document)))
        node = node_at(document, path)
        operation = draw(st.sampled_from(["replace", "delete", "insert", "edit"]))
        if operation == "edit" and isinstance(node, str) and path:
            # A real field's value, a little off: still a string where a string belongs.
            node_at(document, path[:-1])[path[-1]] = node + draw(st.sampled_from(TEXT_EDITS))
        elif operation == "delete" and path:
            del node_at(document, path[:-1])[path[-1]]
        elif operation == "insert" and isinstance(node, dict):
            node[draw(keys)] = draw(values)
        elif operation == "insert" and isinstance(node, list):
            node.insert(draw(st.integers(0, len(node))), draw(values))
        elif path:
            node_at(document, path[:-1])[path[-1]] = draw(values)
        else:
            document = draw(values)
    return document


# A canonical tool using every field, so that mutations reach every rule of shared.contract.tools.
RICH_TOOL: dict[str, Any] = {
    "name": "Reschedule",
    "description": "Moves an appointment",
    "parameters": {
        "type": "object",
        "properties": {
            "date": {"type": "string", "format": "date"},
            "speech": {"type": "string"},
            "From": {"type": "string"},
        },
        "required": ["date"],
        "additionalProperties": False,
    },
    "context_parameters": [
        {"name": "From", "required": True, "type": "string", "enum": ["a"], "description": "x"}
    ],
    "request": {
        "url": "https://api.example.com/book/{{input.date}}",
        "method": "POST",
        "headers": {"Authorization": "Bearer {{secrets.API_KEY}}"},
        "query": {"from": "{{context.From}}", "call": "{{call.id}}"},
        "body": {"date": "{{input.date}}", "conversation": "{{conversation.id}}"},
        "json_style": "compact",
        "timeout_s": 5,
        "retry": {"attempts": 3, "on": ["connection_error", "http_5xx"], "backoff_s": 0.1},
        "signing": {"scheme": "standard_webhooks", "secrets": ["{{secrets.WEBHOOK}}"]},
    },
    "speech": {"on_send": "One moment", "from_argument": "speech", "on_receive": True},
    "response": {
        "variables": {"price": "$.price"},
        "result_path": "$.data",
        "result_required": True,
        "result_type": "object",
        "agent_message_path": "$.say",
        "tool_error": {"path": "$.status", "equals": "error", "message_path": "$.message"},
    },
    "errors": {
        "messages": {"timeout": "Too slow"},
        "end_conversation_on": ["missing_context_parameter"],
    },
}
EXAMPLE_FILES = {
    "vocode": "vocode_meeting_booking.json",
    "bland": "bland_book_appointment.json",
    "aivoco": "aivoco_functions.json",
    "callkaro": "callkaro_product_availability.json",
    "xml": "xml_contact_lookup.xml",
}
EXAMPLES = {dialect: example(name) for dialect, name in EXAMPLE_FILES.items()}
EXAMPLE_TOOLS = [
    tool for dialect, document in EXAMPLES.items() for tool in dialects.parse(dialect, document)
]
JSON_DIALECTS = [dialect for dialect in dialects.DIALECTS if dialect != "xml"]
# Each JSON dialect's seeds: its example, and several tools in one document.
SEEDS: dict[str, list[Any]] = {
    dialects.MIDCALL: [
        RICH_TOOL,
        {
            "tools": [
                RICH_TOOL,
                *(dialects.export(dialects.MIDCALL, tool) for tool in EXAMPLE_TOOLS),
            ]
        },
    ],
    "vocode": [EXAMPLES["vocode"], [EXAMPLES["vocode"], EXAMPLES["vocode"] | {"name": "Other"}]],
    "bland": [EXAMPLES["bland"], {"tools": [EXAMPLES["bland"]], "phone_number": "+1222"}],
    "aivoco": [EXAMPLES["aivoco"], EXAMPLES["aivoco"]["functions"][0]],
    "callkaro": [EXAMPLES["callkaro"], [EXAMPLES["callkaro"]]],
}
MUTATED = {dialect: st.sampled_from(SEEDS[dialect]).flatmap(mutated) for dialect in SEEDS}

# --- XML ----------------------------------------------------------------------------------

XML_TAGS = ["Response", "Gather", "Converse", "Tool", "Description", "Parameter", "System"]
XML_ATTRIBUTES = sorted({*xml.TOOL_ATTRIBUTES, *xml.PARAMETER_ATTRIBUTES})
XML_VALUES = [*xml.TYPES, "true", "FALSE", "yes", "a,b", " , ", "https://example.com/x", "a" * 65]
# Raw text spliced into a serialized document: what ElementTree would have escaped.
XML_SNIPPETS = [
    "<",
    ">",
    "&",
    "&amp;",
    "&lt;",
    "&#0;",
    "&#x110000;",
    "&nope;",
    "]]>",
    "<![CDATA[x]]>",
    "<!-- c -->",
    "<?pi x?>",
    "<!DOCTYPE Response>",
    '<?xml version="1.0" encoding="UTF-16"?>',
    '<?xml version="1.0" encoding="x-bogus"?>',
    ' xmlns="urn:x"',
    ' xmlns:ns="urn:x"',
    "<ns:Tool/>",
    '<Tool name="Extra" url="https://example.com/e"/>',
    "</Tool>",
    "\x00",
    "\ufeff",
]

xml_text = st.one_of(st.text(BODY_CHARACTER, max_size=30), st.sampled_from(XML_VALUES))
# ElementTree reads a name starting with "{" as {namespace}name and cannot write it otherwise.
xml_name_text = st.text(st.characters(codec="utf-8", exclude_characters="{"), max_size=8)
xml_names = st.one_of(st.sampled_from(XML_ATTRIBUTES), xml_name_text)
xml_tags = st.one_of(st.sampled_from(XML_TAGS), xml_name_text)


@st.composite
def mutated_xml(draw: st.DrawFn) -> str:
    """The XML example with elements, attributes and text changed, then raw text spliced in."""
    root = ElementTree.fromstring(EXAMPLES["xml"])  # our own example: the stdlib parser is fine
    for _ in range(draw(st.integers(1, 4))):
        elements = list(root.iter())
        element = draw(st.sampled_from(elements))
        operation = draw(
            st.sampled_from(["set", "unset", "child", "remove", "text", "copy", "retag"])
        )
        if operation == "set":
            element.set(draw(xml_names), draw(xml_text))
        elif operation == "unset" and element.attrib:
            del element.attrib[draw(st.sampled_from(sorted(element.attrib)))]
        elif operation == "child":
            attributes = draw(st.dictionaries(xml_names, xml_text, max_size=3))
            ElementTree.SubElement(element, draw(xml_tags), attributes)
        elif operation == "remove" and len(element):
            element.remove(draw(st.sampled_from(list(element))))
        elif operation == "text":
            element.text = draw(xml_text)
        elif operation == "copy":
            element.append(copy.deepcopy(draw(st.sampled_from(elements))))
        elif operation == "retag":
            element.tag = draw(xml_tags)
    text = ElementTree.tostring(root, encoding="unicode")
    if draw(st.booleans()):
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.one_of(st.sampled_from(XML_SNIPPETS), xml_text)) + text[at:]
    if draw(st.booleans()):
        text = text[: draw(st.integers(0, len(text)))]
    return text


def _laughs(levels: int) -> str:
    entities = ['<!ENTITY lol0 "lol">'] + [
        f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, levels)
    ]
    return (
        f"<!DOCTYPE Tool [{''.join(entities)}]>"
        f'<Tool name="a" url="https://example.com/x"><Description>&lol{levels - 1};'
        "</Description></Tool>"
    )


# Documents that must not be expanded or fetched: name -> (document, must it be refused).
XML_BOMBS: dict[str, tuple[str, bool]] = {
    "billion laughs": (_laughs(10), True),
    "quadratic blowup": (
        f'<!DOCTYPE Tool [<!ENTITY a "{"x" * 50_000}">]>'
        f'<Tool name="a" url="https://example.com/x"><Description>{"&a;" * 50_000}'
        "</Description></Tool>",
        True,
    ),
    "external entity": (
        '<!DOCTYPE Tool [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
        '<Tool name="a" url="https://example.com/x"><Description>&xxe;</Description></Tool>',
        True,
    ),
    "external parameter entity": (
        '<!DOCTYPE Tool [<!ENTITY % p SYSTEM "http://127.0.0.1:9/x.dtd"> %p;]>'
        '<Tool name="a" url="https://example.com/x"/>',
        True,
    ),
    "entity in an attribute": (
        '<!DOCTYPE Tool [<!ENTITY u "https://example.com/x">]><Tool name="a" url="&u;"/>',
        True,
    ),
    "unparsed entity": (
        '<!DOCTYPE Tool [<!NOTATION n SYSTEM "x"><!ENTITY e SYSTEM "file:///x" NDATA n>]>'
        '<Tool name="a" url="https://example.com/x"/>',
        True,
    ),
    # Not loaded by expat at all: it may parse, but nothing is fetched.
    "external DTD": (
        '<!DOCTYPE Tool SYSTEM "http://127.0.0.1:9/x.dtd">'
        '<Tool name="a" url="https://example.com/x"/>',
        False,
    ),
    "XInclude": (
        '<Tool name="a" url="https://example.com/x" xmlns:xi="http://www.w3.org/2001/XInclude">'
        '<xi:include href="file:///etc/passwd" parse="text"/></Tool>',
        True,
    ),
    "deep nesting": ("<Response>" * 100_000 + "</Response>" * 100_000, True),
}

deep_xml = st.integers(1, 60).map(lambda depth: "<Response>" * depth + "</Response>" * depth)
xml_documents: SearchStrategy[str] = st.one_of(
    st.text(BODY_CHARACTER),
    mutated_xml(),
    deep_xml,
    one_of_large([document for document, _ in XML_BOMBS.values()]),
)

# --- dialects: the property -------------------------------------------------------------------


def assert_client_error(exc: ApiError) -> None:
    assert 400 <= exc.status < 500, f"{exc.status} {exc.code}: {exc.message}"


def parses_or_is_refused(dialect: str, document: Any) -> None:
    """Tools, or an ``ApiError`` in the 4xx range; never any other exception."""
    try:
        tools = dialects.parse(dialect, document)
    except ApiError as exc:
        assert_client_error(exc)
        return
    assert len(dialects.sources(dialect, document, tools)) == len(tools)
    for tool in tools:
        # What the registry does with an accepted tool next: SQL and the catalog take JSON.
        tool.model_dump_json()
        for target in sorted({dialect, dialects.MIDCALL}):
            try:
                dialects.export(target, tool)
            except ApiError as exc:
                assert_client_error(exc)


def test_the_seeds_are_valid_documents() -> None:
    """Mutations start from documents that parse, so they reach past the first check."""
    for dialect, seeds in SEEDS.items():
        for seed in seeds:
            assert dialects.parse(dialect, seed)
    assert dialects.parse("xml", EXAMPLES["xml"])


T_URL = "https://api.example.com/t"
# Documents that once crashed a parser (or the registry right after it), tried on every run.
DOCUMENT_REPRODUCERS: list[tuple[str, Any]] = [
    ("midcall", {"name": "T", "description": "\ud800", "request": {"url": T_URL}}),
    (
        "midcall",
        {"name": "T", "request": {"url": T_URL}, "response": {"variables": {"v": "\ud800"}}},
    ),
    ("vocode", EXAMPLES["vocode"] | {"signature_secret": "\u00e9"}),
    ("vocode", EXAMPLES["vocode"] | {"input_schema": '{"type": "object", "title": "\\ud800"}'}),
    ("bland", {"name": "T", "url": T_URL, "input_schema": {"properties": {"x": "\ud800"}}}),
    ("aivoco", EXAMPLES["aivoco"]["functions"][0] | {"description": "\ud800"}),
    ("callkaro", EXAMPLES["callkaro"] | {"description": "\ud800"}),
]


@pytest.mark.parametrize(("dialect", "document"), DOCUMENT_REPRODUCERS)
def test_documents_that_broke_a_parser_are_client_errors(dialect: str, document: Any) -> None:
    parses_or_is_refused(dialect, document)


@pytest.mark.parametrize("dialect", dialects.DIALECTS)
@fuzz(150)
@given(document=documents)
def test_any_json_value_parses_or_is_a_client_error(dialect: str, document: Any) -> None:
    parses_or_is_refused(dialect, document)


@pytest.mark.parametrize("dialect", JSON_DIALECTS)
@fuzz(200)
@given(data=st.data())
def test_a_mutated_example_parses_or_is_a_client_error(dialect: str, data: st.DataObject) -> None:
    parses_or_is_refused(dialect, data.draw(MUTATED[dialect], label="document"))


@fuzz(300)
@given(document=xml_documents)
def test_any_xml_text_parses_or_is_a_client_error(document: str) -> None:
    parses_or_is_refused("xml", document)


@pytest.mark.parametrize("name", XML_BOMBS)
def test_xml_bombs_are_neither_expanded_nor_fetched(name: str) -> None:
    document, refused = XML_BOMBS[name]
    started = time.monotonic()
    if refused:
        with pytest.raises(ApiError) as raised:
            dialects.parse("xml", document)
        assert raised.value.status == 422
    else:
        parses_or_is_refused("xml", document)
    # Expanded, the billion laughs alone would take gigabytes and minutes.
    assert time.monotonic() - started < 2


# --- REST: what is sent --------------------------------------------------------------------

ACCOUNT = "acme"
# Stands in for the seeded account's key, which is made afresh by each fixture.
ACCOUNT_KEY = "<acme's key>"
AGENTS = ["salon-bot", "other-bot"]
TOOL_NAMES = sorted({tool.name for tool in EXAMPLE_TOOLS} | {RICH_TOOL["name"]})
CONVERSATION = "conv-42"
SECRET = "API_KEY"
ID_REGEX = ID_PATTERN.removeprefix("^").removesuffix("$")


def encoded(text: str) -> str:
    """Percent-encoded as a client sends it; a lone surrogate becomes bytes that are not UTF-8."""
    return quote_from_bytes(text.encode("utf-8", "surrogatepass"), safe="")


any_text = st.one_of(st.text(ANY_CHARACTER, max_size=40), st.sampled_from(INTERESTING_TEXT))
valid_ids = st.from_regex(ID_REGEX, fullmatch=True)


def known_or_any(known: list[str], valid: SearchStrategy[str] | None = None) -> SearchStrategy[str]:
    """What exists, what could exist, and anything at all (long, empty, with "/" or "%")."""
    return weighted(
        (3, st.sampled_from(known) if known else any_text),
        (2, valid if valid is not None else any_text),
        (1, any_text),
        (1, st.sampled_from([".", "..", "%", "%2F", "a/b", "?", "#", "\x00", "a" * 129])),
        (1, st.integers(1_000, 20_000).map(lambda size: "x" * size)),
    )


@st.composite
def segments(draw: st.DrawFn, values: SearchStrategy[str]) -> str:
    """One path parameter: usually one encoded segment, sometimes with raw "/" or "%"."""
    raw = draw(values).encode("utf-8", "surrogatepass")
    return quote_from_bytes(raw, safe=draw(st.sampled_from(["", "", "", "/", "%"])))


integers_as_text = weighted(
    (3, st.integers(-5, 1_000).map(str)),
    (1, st.integers().map(str)),
    (1, st.sampled_from(["2147483648", "9223372036854775807", "9223372036854775808", "9" * 40])),
    (1, st.sampled_from(["1.5", "1e3", "", " 1", "0x10", "\u0661", "NaN", "-0"])),
)


@st.composite
def rfc3339(draw: st.DrawFn) -> str:
    """A well-formed time anywhere in years 1 to 9999, with any offset up to a day."""
    year, month, day = (
        draw(st.integers(1, 9999)),
        draw(st.integers(1, 12)),
        draw(st.integers(1, 28)),
    )
    date = f"{year:04}-{month:02}-{day:02}"
    clock = (
        f"{draw(st.integers(0, 23)):02}:{draw(st.integers(0, 59)):02}:{draw(st.integers(0, 59)):02}"
    )
    fraction = draw(st.sampled_from(["", ".5", ".999999", ".123456789"]))
    sign, hours, minutes = (
        draw(st.sampled_from("+-")),
        draw(st.integers(0, 23)),
        draw(st.integers(0, 59)),
    )
    offset = draw(st.sampled_from(["Z", "", f"{sign}{hours:02}:{minutes:02}"]))
    return f"{date}{draw(st.sampled_from('T t'))}{clock}{fraction}{offset}"


EXTREME_TIMES = [
    "0001-01-01T00:00:00+00:01",
    "0001-01-01T00:00:00-23:59",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59.999999Z",
    "9999-12-31T23:59:59.999999-00:01",
    "9999-12-31T23:59:59+23:59",
    "0000-01-01T00:00:00Z",
    "10000-01-01T00:00:00Z",
    "2026-02-30T00:00:00Z",
    "2026-01-01T24:00:00Z",
    "2026-01-01T00:00:60Z",
    "2026-01-01T00:00:00+24:00",
    "2026-01-01",
    "9999-12-31",
    "253402300800",
    "-62135596801",
    "1e20",
    "-1e20",
    "inf",
    "nan",
    "99999999999999999999",
    "now",
]
times = weighted(
    (3, rfc3339()), (2, st.sampled_from(EXTREME_TIMES)), (1, integers_as_text), (1, any_text)
)
formats = weighted((6, st.sampled_from(["openai", "anthropic", "gemini"])), (1, any_text))
dialect_names = weighted((6, st.sampled_from(dialects.DIALECTS)), (1, any_text))

ADMIN = f"Bearer {ADMIN_KEY}"
ACCOUNT_BEARER = f"Bearer {ACCOUNT_KEY}"
# What an HTTP header can carry: no CR, LF or other control characters (servers refuse them).
header_text = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=40
)
# A key's id is looked up in the keys bucket: ids that no NATS KV key may be, among others.
key_ids = st.one_of(header_text, st.sampled_from(["*", ">", "a.b", "a b", "$", "..", "-", "=a"]))
garbage_authorizations = st.one_of(
    header_text,
    header_text.map(lambda text: f"Bearer {text}"),
    st.tuples(key_ids, header_text).map(lambda parts: f"Bearer mck_{parts[0]}_{parts[1]}"),
    st.sampled_from(
        [
            f"bearer  {ADMIN_KEY} ",
            f"Basic {ADMIN_KEY}",
            "Bearer",
            ADMIN_KEY,
            ADMIN[:-1],
            "Bearer mck__",
        ]
    ),
)
# Mostly a valid key, so that requests get past authentication to the endpoint's own code.
authorizations: SearchStrategy[str | None] = weighted(
    (6, st.just(ADMIN)),
    (3, st.just(ACCOUNT_BEARER)),
    (1, st.none()),
    (2, garbage_authorizations),
)
# Mostly JSON: FastAPI reads a body of any other type (or none) as no object at all (a 422).
content_types: SearchStrategy[str | None] = weighted(
    (6, st.just("application/json")),
    (1, st.none()),
    (
        1,
        st.sampled_from(
            [
                "application/xml",
                "text/plain; charset=latin-1",
                "application/x-www-form-urlencoded",
                "multipart/form-data; boundary=x",
                "application/json; charset=utf-16",
            ]
        ),
    ),
    (1, header_text),
)


def json_bytes(values: SearchStrategy[Any]) -> SearchStrategy[bytes]:
    # json.dumps escapes lone surrogates ("\ud800") and writes NaN, as a sloppy client might.
    return values.map(lambda value: json.dumps(value).encode())


RAW_BODIES = [
    b"",
    b"null",
    b"{",
    b"NaN",
    b"1e999",
    b"9" * 5000,
    b'"\\ud800"',
    b'{"a": "\\ud800"}',
    b"\xff\xfe{\x00}\x00",
    b"[" * 100_000,
    b'{"a":' * 50_000,
    b" " * (MAX_DOCUMENT_BYTES + 1),
]
arbitrary_bodies: SearchStrategy[bytes | None] = st.one_of(
    st.none(),
    json_bytes(documents),
    st.binary(max_size=200),
    one_of_large(RAW_BODIES),
)


def bodies(near_valid: SearchStrategy[Any] | None = None) -> SearchStrategy[bytes | None]:
    """A body: JSON close to what the endpoint takes (when it takes any), or anything."""
    if near_valid is None:
        return arbitrary_bodies
    return weighted((3, json_bytes(near_valid)), (1, arbitrary_bodies))


def objects(
    required: dict[str, SearchStrategy[Any]], optional: dict[str, SearchStrategy[Any]] | None = None
) -> SearchStrategy[dict[str, Any]]:
    """Objects with the ``required`` fields, any of the ``optional`` ones and, now and then, a
    field the endpoint does not know (a body missing a required field is among the others)."""
    unknown = weighted((5, st.just({})), (1, st.dictionaries(keys, json_values, max_size=1)))
    known = st.fixed_dictionaries(required, optional=optional or {})
    return st.builds(lambda fields, extra: {**fields, **extra}, known, unknown)


ids_or_any = weighted(
    (2, valid_ids), (2, st.sampled_from([*AGENTS, ACCOUNT, "default"])), (1, any_text)
)
optional_text = st.one_of(st.none(), any_text, long_text)
TEMPLATE_PIECES = ["{{", "}}", "{{order.price}}", "{{a.0.b}}", "{{ x }}", "{{__class__}}", "{{.}}"]
templates = st.lists(st.one_of(any_text, st.sampled_from(TEMPLATE_PIECES)), max_size=8).map("".join)
big_integers = st.one_of(st.integers(), st.sampled_from([2**63, -(2**63) - 1, 10**30]))
replay_options: dict[str, SearchStrategy[Any]] = {
    "as_called": weighted((4, st.booleans()), (1, json_values)),
    "dry_run": st.booleans(),
    "limit": big_integers,
}
replay_filters: dict[str, SearchStrategy[Any]] = {
    "agent_id": ids_or_any,
    "account_id": ids_or_any,
    "tool": any_text,
    "code": st.one_of(any_text, st.sampled_from([code.value for code in ErrorCode])),
    "until": times,
}
# A replay names its failed calls or selects them with filters (never both, never neither).
replay_bodies = st.one_of(
    objects({"ids": st.lists(big_integers, max_size=3)}, replay_options),
    objects({"call_ids": st.lists(any_text, max_size=3)}, replay_options),
    objects({"since": times}, replay_filters | replay_options),
    objects({}, replay_filters | replay_options),
)


@dataclass(frozen=True)
class Call:
    """One request as sent; Hypothesis prints it as the reproducer of a failure."""

    method: str
    url: str  # path and query, percent-encoded
    authorization: str | None
    content_type: str | None
    body: bytes | None


QueryAndBody = tuple[str, bytes | None]


@st.composite
def queries(
    draw: st.DrawFn, params: dict[str, SearchStrategy[str]], required: tuple[str, ...] = ()
) -> str:
    """A required parameter usually once, an optional one as often missing as given;
    sometimes twice, and now and then a parameter the endpoint does not know."""
    counts = {True: [1] * 6 + [0, 2], False: [0, 0, 0, 1, 1, 2]}
    pairs = [
        (name, draw(values))
        for name, values in params.items()
        for _ in range(draw(st.sampled_from(counts[name in required])))
    ]
    pairs += draw(
        weighted((5, st.just([])), (1, st.lists(st.tuples(any_text, any_text), max_size=1)))
    )
    return "&".join(f"{encoded(name)}={encoded(value)}" for name, value in pairs)


def separately(
    params: dict[str, SearchStrategy[str]] | None = None,
    body: SearchStrategy[bytes | None] = arbitrary_bodies,
    required: tuple[str, ...] = (),
) -> SearchStrategy[QueryAndBody]:
    return st.tuples(queries(params or {}, required), body)


@st.composite
def tool_posts(draw: st.DrawFn) -> QueryAndBody:
    """A document in the dialect the query names: mutated examples mostly, or anything."""
    dialect = draw(dialect_names)
    body: bytes | None
    if dialect == "xml":
        xml_body = weighted((1, st.just(EXAMPLES["xml"])), (3, mutated_xml()), (1, xml_documents))
        body = draw(weighted((4, xml_body.map(str.encode)), (1, arbitrary_bodies)))
    elif dialect in MUTATED:
        seeds = st.sampled_from(SEEDS[dialect])
        body = draw(bodies(weighted((1, seeds), (3, MUTATED[dialect]), (1, documents))))
    else:
        body = draw(arbitrary_bodies)
    implicit = dialect == dialects.MIDCALL and draw(st.booleans())
    return ("" if implicit else f"dialect={encoded(dialect)}"), body


# Path parameters by name; a route added later gets ``known_or_any([])`` for its new ones.
SEGMENTS: dict[str, SearchStrategy[str]] = {
    "agent_id": known_or_any(AGENTS, valid_ids),
    # Tools' names, and account secrets' (/v1/accounts/{account_id}/secrets/{name}).
    "name": known_or_any(
        [*TOOL_NAMES, SECRET], st.from_regex(r"[A-Za-z0-9_]{1,64}", fullmatch=True)
    ),
    "conversation_id": known_or_any([CONVERSATION], valid_ids),
    "account_id": known_or_any([ACCOUNT, "default"], valid_ids),
    "failure_id": known_or_any(["1", "2"], integers_as_text),
    "key_id": known_or_any(["0123456789abcdef"], st.from_regex(r"[0-9a-f]{1,32}", fullmatch=True)),
}
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]


@dataclass(frozen=True)
class Endpoint:
    app: str  # registry | billing
    method: str
    path: str  # the route's template
    query_and_body: SearchStrategy[QueryAndBody] = field(default_factory=separately)
    # Requests that once got a 5xx, tried first on every run (``@example``).
    reproducers: tuple[Call, ...] = ()

    def __str__(self) -> str:
        return f"{self.app} {self.method} {self.path}"


@st.composite
def calls(draw: st.DrawFn, endpoint: Endpoint) -> Call:
    path = re.sub(
        r"\{(\w+)\}",
        lambda match: draw(segments(SEGMENTS.get(match.group(1), known_or_any([])))),
        endpoint.path,
    )
    query, body = draw(endpoint.query_and_body)
    # Mostly the route's own method; now and then one it does not take (a 405).
    method = draw(weighted((12, st.just(endpoint.method)), (1, st.sampled_from(METHODS))))
    return Call(
        method,
        f"{path}?{query}" if query else path,
        draw(authorizations),
        draw(content_types),
        body,
    )


def as_admin(method: str, url: str, body: Any = None) -> Call:
    """A request as the admin, with ``body`` (if any) as JSON."""
    content = None if body is None else json.dumps(body).encode()
    return Call(method, url, ADMIN, "application/json", content)


# A value each path parameter has in the seeded services, to reach an endpoint's own code.
KNOWN_SEGMENTS = {
    "agent_id": AGENTS[0],
    "name": TOOL_NAMES[0],
    "conversation_id": CONVERSATION,
    "account_id": ACCOUNT,
    "failure_id": "1",
    "key_id": "0123456789abcdef",
}


def known_path(template: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda match: KNOWN_SEGMENTS.get(match.group(1), "x"), template)


ENDPOINTS = [
    Endpoint(
        "registry",
        "PUT",
        "/v1/agents/{agent_id}",
        separately(body=bodies(objects({"account_id": ids_or_any}, {"name": optional_text}))),
    ),
    Endpoint("registry", "GET", "/v1/agents/{agent_id}"),
    Endpoint(
        "registry",
        "POST",
        "/v1/agents/{agent_id}/tools",
        tool_posts(),
        (
            as_admin("POST", "/v1/agents/salon-bot/tools", DOCUMENT_REPRODUCERS[0][1]),
            as_admin(
                "POST", "/v1/agents/salon-bot/tools?dialect=vocode", DOCUMENT_REPRODUCERS[2][1]
            ),
        ),
    ),
    Endpoint("registry", "GET", "/v1/agents/{agent_id}/tools"),
    Endpoint(
        "registry",
        "GET",
        "/v1/agents/{agent_id}/tools/{name}",
        separately({"dialect": dialect_names}),
    ),
    Endpoint("registry", "DELETE", "/v1/agents/{agent_id}/tools/{name}"),
    Endpoint(
        "registry",
        "GET",
        "/v1/agents/{agent_id}/manifest",
        separately({"format": formats}, required=("format",)),
    ),
    Endpoint("registry", "GET", "/v1/conversations/{conversation_id}/variables"),
    Endpoint(
        "registry",
        "POST",
        "/v1/conversations/{conversation_id}/render",
        separately(body=bodies(objects({"template": st.one_of(templates, long_text)}))),
    ),
    Endpoint(
        "registry",
        "GET",
        "/v1/failed",
        separately(
            {
                "agent_id": ids_or_any,
                "account_id": ids_or_any,
                "tool": any_text,
                "code": any_text,
                "call_id": any_text,
                "state": weighted(
                    (3, st.sampled_from(["failed", "replaying", "replayed"])), (1, any_text)
                ),
                "since": times,
                "until": times,
                "id": integers_as_text,
                "limit": integers_as_text,
                "before_id": integers_as_text,
            }
        ),
        (
            as_admin("GET", f"/v1/failed?before_id={2**63}"),
            as_admin("GET", f"/v1/failed?id={2**63}"),
        ),
    ),
    Endpoint(
        "registry",
        "GET",
        "/v1/failed/{failure_id}",
        reproducers=(as_admin("GET", f"/v1/failed/{2**63}"),),
    ),
    Endpoint(
        "registry",
        "POST",
        "/v1/failed/replay",
        separately(body=bodies(replay_bodies)),
        (
            as_admin("POST", "/v1/failed/replay", {"ids": [2**63]}),
            as_admin("POST", "/v1/failed/replay", {"call_ids": ["\ud800"]}),
        ),
    ),
    Endpoint(
        "registry",
        "POST",
        "/v1/accounts",
        separately(body=bodies(objects({"account_id": ids_or_any}, {"name": optional_text}))),
    ),
    Endpoint("registry", "GET", "/v1/accounts"),
    Endpoint("registry", "GET", "/v1/accounts/{account_id}"),
    Endpoint("registry", "POST", "/v1/accounts/{account_id}/keys"),
    Endpoint("registry", "GET", "/v1/accounts/{account_id}/keys"),
    Endpoint("registry", "DELETE", "/v1/accounts/{account_id}/keys/{key_id}"),
    Endpoint("registry", "GET", "/v1/accounts/{account_id}/secrets"),
    Endpoint(
        "registry",
        "PUT",
        "/v1/accounts/{account_id}/secrets/{name}",
        separately(body=bodies(objects({"value": st.one_of(any_text, long_text)}))),
        (as_admin("PUT", f"/v1/accounts/acme/secrets/{SECRET}", {"value": "\ud800"}),),
    ),
    Endpoint("registry", "DELETE", "/v1/accounts/{account_id}/secrets/{name}"),
    Endpoint("registry", "GET", "/healthz"),
    Endpoint(
        "billing",
        "GET",
        "/v1/usage",
        separately(
            {"account_id": ids_or_any, "since": times, "until": times}, required=("account_id",)
        ),
    ),
    Endpoint("billing", "GET", "/v1/usage/conversations/{conversation_id}"),
    Endpoint("billing", "GET", "/healthz"),
]


@dataclass(frozen=True)
class Operation:
    """A route as its app's OpenAPI document describes it.

    From the document, as FastAPI's ``app.routes`` no longer lists the routes of
    included routers.
    """

    app: str
    method: str
    path: str
    query: tuple[str, ...]
    body_fields: tuple[str, ...]


def operations(name: str, app: FastAPI) -> list[Operation]:
    document = app.openapi()
    schemas = document.get("components", {}).get("schemas", {})
    found = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            parameters = operation.get("parameters", [])
            query = tuple(p["name"] for p in parameters if p["in"] == "query")
            content = operation.get("requestBody", {}).get("content", {})
            reference = content.get("application/json", {}).get("schema", {}).get("$ref", "")
            fields = schemas.get(reference.rsplit("/", 1)[-1], {}).get("properties", {})
            found.append(Operation(name, method.upper(), path, query, tuple(fields)))
    return found


def generic(operation: Operation) -> Endpoint:
    """An endpoint this module does not list: its query parameters and body fields by name."""
    params = {name: any_text for name in operation.query}
    body = bodies(objects({name: json_values for name in operation.body_fields}))
    return Endpoint(operation.app, operation.method, operation.path, separately(params, body))


# --- REST: the services and the property ---------------------------------------------------


def check(response: httpx.Response, call: Call) -> None:
    status = response.status_code
    assert status < 500, f"{status} for {call}: {response.text[:2000]}"
    if 200 <= status < 300 or call.method == "HEAD":  # a HEAD answer has no body
        return
    if 300 <= status < 400:  # Starlette's redirect of "/v1/failed/" to "/v1/failed"
        assert "location" in response.headers, call
        return
    body = response.json()
    assert isinstance(body, dict), body
    assert list(body) == ["error"], body
    error = body["error"]
    assert isinstance(error, dict), body
    assert set(error) == {"code", "message", "details"}, body
    assert isinstance(error["code"], str), body
    assert isinstance(error["message"], str), body


def captured_apps(monkeypatch: pytest.MonkeyPatch, module: ModuleType) -> list[FastAPI]:
    """Where ``module``'s service puts the app it composes, instead of serving it on a port."""
    apps: list[FastAPI] = []

    class InProcess:
        port = 0

        def __init__(self, app: FastAPI, *_: object, **__: object) -> None:
            apps.append(app)

        async def start(self) -> None:
            pass

        async def stop(self) -> None:
            pass

    monkeypatch.setattr(module, "HttpServer", InProcess)
    return apps


@dataclass
class Services:
    """The registry and billing on one event loop, driven from synchronous tests.

    Synchronous so that a test can also build a ``@given`` test at run time (for routes
    it learns from the app); each request runs on the loop the services started on.
    """

    runner: asyncio.Runner
    apps: dict[str, FastAPI]
    clients: dict[str, httpx.AsyncClient]
    account_key: str

    def send(self, app: str, call: Call) -> httpx.Response:
        headers: dict[bytes, bytes] = {}
        if call.authorization is not None:
            value = call.authorization.replace(ACCOUNT_KEY, self.account_key)
            headers[b"authorization"] = value.encode("latin-1")
        if call.content_type is not None:
            headers[b"content-type"] = call.content_type.encode("latin-1")
        request = self.clients[app].request(
            call.method, call.url, headers=headers, content=call.body
        )
        return self.runner.run(request)

    def operations(self) -> list[Operation]:
        return [found for name, app in self.apps.items() for found in operations(name, app)]


async def _expect(response: httpx.Response, status: int) -> httpx.Response:
    assert response.status_code == status, response.text
    return response


async def _seed(
    registry: httpx.AsyncClient,
    routes: list[Operation],
    nats_url: str,
    registry_db: Settings,
    billing_db: Settings,
) -> str:
    """An account with a key, a secret and agents, tools of every dialect, a conversation's
    variables, failed calls and usage: something for every endpoint to find.

    Returns the account's key.
    """
    admin = {"authorization": ADMIN}
    await _expect(
        await registry.post("/v1/accounts", json={"account_id": ACCOUNT}, headers=admin), 201
    )
    made = await _expect(await registry.post(f"/v1/accounts/{ACCOUNT}/keys", headers=admin), 201)
    await _expect(
        await registry.put(f"/v1/agents/{AGENTS[0]}", json={"account_id": ACCOUNT}, headers=admin),
        200,
    )
    for dialect, document in EXAMPLES.items():
        content = document.encode() if isinstance(document, str) else json.dumps(document).encode()
        url = f"/v1/agents/{AGENTS[0]}/tools?dialect={dialect}"
        await _expect(await registry.post(url, content=content, headers=admin), 201)
    await _expect(
        await registry.post(f"/v1/agents/{AGENTS[1]}/tools", json=RICH_TOOL, headers=admin), 201
    )
    secret = f"/v1/accounts/{ACCOUNT}/secrets/{SECRET}"
    if any(found.path == "/v1/accounts/{account_id}/secrets/{name}" for found in routes):
        await _expect(await registry.put(secret, json={"value": "s3cret"}, headers=admin), 200)

    connection = await nats.connect(nats_url)
    kv = await connection.jetstream().key_value(subjects.CONVERSATIONS_BUCKET)
    await ConversationVariables(kv).merge(
        Conversation(ACCOUNT, CONVERSATION), {"order": {"price": 3}}
    )
    await connection.close()

    call = ToolCall(
        call_id="call-7",
        conversation_id=CONVERSATION,
        agent_id=AGENTS[0],
        tool=EXAMPLE_TOOLS[0].name,
        arguments={"date": "2026-01-01"},
        context={"From": "+1222"},
        account_id=ACCOUNT,
    )
    error = ErrorInfo(code=ErrorCode.HTTP_ERROR, message="The booking API answered 503.")
    result = ToolCallResult(
        call_id=call.call_id,
        conversation_id=CONVERSATION,
        tool=call.tool,
        status="error",
        error=error,
        http_status=503,
    )
    letter = DeadLetter(
        stage="dispatcher",
        subject=f"midcall.calls.{CONVERSATION}",
        reason="not JSON",
        sequence=1,
        body_base64=base64.b64encode(b"{").decode(),
    )
    engine = build_engine(registry_db)
    failures = FailureStore(engine)
    failures.record_runs(
        [CallRun(call=call, result=result, tool=EXAMPLE_TOOLS[0], account_id=ACCOUNT)]
    )
    failures.record_dead_letters(
        [(letter, {"conversation_id": CONVERSATION, "account_id": ACCOUNT})]
    )
    engine.dispose()
    engine = build_engine(billing_db)
    UsageStore(engine).record(usage("call-7", conversation_id=CONVERSATION, account_id=ACCOUNT))
    engine.dispose()
    return str(made.json()["key"])


@pytest.fixture
def services(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Services]:
    server = NatsServer(tmp_path / "nats")
    url = server.start()
    apps = {
        "registry": captured_apps(monkeypatch, registry_main),
        "billing": captured_apps(monkeypatch, billing_main),
    }

    def settings_for(name: str) -> Settings:
        return Settings(
            nats_url=url,
            database_url=f"sqlite:///{tmp_path / f'{name}.db'}",
            data_dir=tmp_path,
            admin_key=ADMIN_KEY,
        )

    registry = RegistryService(settings_for("registry"))
    billing = BillingService(settings_for("billing"))
    try:
        with asyncio.Runner() as runner:
            runner.run(registry.start())
            runner.run(billing.start())
            clients = {
                name: httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=found[0]), base_url=f"http://{name}"
                )
                for name, found in apps.items()
            }
            try:
                key = runner.run(
                    _seed(
                        clients["registry"],
                        operations("registry", apps["registry"][0]),
                        url,
                        settings_for("registry"),
                        settings_for("billing"),
                    )
                )
                yield Services(
                    runner, {name: found[0] for name, found in apps.items()}, clients, key
                )
            finally:
                for client in clients.values():
                    runner.run(client.aclose())
                runner.run(billing.stop())
                runner.run(registry.stop())
    finally:
        server.stop()


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
def test_an_endpoint_answers_any_request_below_500_in_the_error_shape(
    services: Services, endpoint: Endpoint
) -> None:
    @fuzz(100)
    @given(call=calls(endpoint))
    def answers(call: Call) -> None:
        check(services.send(endpoint.app, call), call)

    # A key whose id ("mck_<id>_<secret>") cannot be a NATS KV key was a 500 everywhere.
    bad_key_id = Call(endpoint.method, known_path(endpoint.path), "Bearer mck_:_0", None, None)
    for call in (*endpoint.reproducers, bad_key_id):
        answers = hypothesis.example(call=call)(answers)
    answers()


def test_every_listed_endpoint_is_a_route(services: Services) -> None:
    """A renamed route would leave its fuzzing here hitting 404s, and passing."""
    routes = {(found.app, found.method, found.path) for found in services.operations()}
    assert {(e.app, e.method, e.path) for e in ENDPOINTS} <= routes


def test_routes_not_listed_here_are_fuzzed_by_their_parameters(services: Services) -> None:
    """Routes added after ``ENDPOINTS`` was written are fuzzed too, by their parameters' names."""
    listed = {(e.app, e.method, e.path) for e in ENDPOINTS}
    extra = [
        generic(found)
        for found in services.operations()
        if (found.app, found.method, found.path) not in listed
    ]
    if not extra:
        return

    @fuzz(100 * len(extra))
    @given(data=st.data())
    def answers(data: st.DataObject) -> None:
        endpoint = data.draw(st.sampled_from(extra), label="endpoint")
        call = data.draw(calls(endpoint), label="call")
        check(services.send(endpoint.app, call), call)

    answers()
