"""The dialect seam: choosing a dialect, document-wide rules, and export's round-trip check."""

from typing import Any

import pytest

from services.registry import dialects
from services.registry.dialects import midcall, roundtrip
from services.registry.tool_secrets import extract_signing_secrets
from tests.dialect_support import example, rejection, tool

CANCEL = {"name": "Cancel", "request": {"url": "https://api.example.com/cancel"}}


def test_an_unknown_dialect_is_400_listing_the_valid_ones() -> None:
    error = rejection(lambda: dialects.require("retell"))

    assert (error.status, error.code, error.message) == (
        400,
        "unknown_dialect",
        "unknown dialect 'retell'; use one of: midcall, vocode, bland, aivoco, xml, callkaro",
    )


def test_only_xml_travels_as_xml() -> None:
    media_types = {name: dialects.require(name).media_type for name in dialects.DIALECTS}

    assert media_types == {
        "midcall": "application/json",
        "vocode": "application/json",
        "bland": "application/json",
        "aivoco": "application/json",
        "xml": "application/xml",
        "callkaro": "application/json",
    }


@pytest.mark.parametrize(
    ("dialect", "document"),
    [
        ("midcall", {"tools": []}),
        ("vocode", []),
        ("bland", {"phone_number": "+12223334444", "tools": []}),
        ("aivoco", {"functions": []}),
        ("xml", "<Response><Say>Hello</Say></Response>"),
        ("callkaro", []),
    ],
)
def test_a_document_without_tools_is_a_422(dialect: str, document: Any) -> None:
    error = rejection(lambda: dialects.parse(dialect, document))

    assert (error.status, error.message) == (422, "the document defines no tools")


@pytest.mark.parametrize(
    ("dialect", "document"),
    [
        ("aivoco", {"functions": [example("aivoco_functions.json")["functions"][0]] * 2}),
        (
            "xml",
            '<Response><Tool name="a" url="https://x.example"/>'
            '<Tool name="a" url="https://y.example"/></Response>',
        ),
    ],
)
def test_one_name_twice_in_a_document_is_a_422(dialect: str, document: Any) -> None:
    error = rejection(lambda: dialects.parse(dialect, document))

    name = "get_weather" if dialect == "aivoco" else "a"
    assert (
        error.message == f"tools[1].name: '{name}' is already defined by tools[0] in this document"
    )


def test_midcall_exports_the_canonical_tool_and_parses_it_back() -> None:
    canonical = tool(**CANCEL)

    exported = dialects.export("midcall", canonical)

    assert exported == canonical.public_dump()
    assert midcall.parse(exported) == [canonical]


def test_every_canonical_tool_is_expressible_in_midcall() -> None:
    for name in ("vocode_meeting_booking.json", "bland_book_appointment.json"):
        dialect = name.split("_")[0]
        # As the registry keeps them: signing secrets as references to account secrets.
        for kept in extract_signing_secrets("a", dialects.parse(dialect, example(name))).tools:
            assert midcall.parse(dialects.export("midcall", kept)) == [kept]


def test_a_signing_secret_kept_as_a_value_exports_as_stars() -> None:
    (parsed,) = dialects.parse("vocode", example("vocode_meeting_booking.json"))

    exported = dialects.export("midcall", parsed)

    assert isinstance(exported, dict)
    assert exported["request"]["signing"]["secrets"] == ["***"]


def test_differences_name_nested_fields_and_list_items() -> None:
    before = {"a": {"b": 1, "c": [1, {"d": 2}]}, "e": [1], "f": None}
    after = {"a": {"b": 2, "c": [1, {"d": 3}]}, "e": [1, 2], "g": 0}

    assert roundtrip.differences(before, after) == ["a.b", "a.c[1].d", "e", "g"]


def test_no_differences_between_equal_values() -> None:
    assert roundtrip.differences({"a": [1, {"b": None}]}, {"a": [1, {"b": None}]}) == []
