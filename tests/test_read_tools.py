"""Tools read from work items: parsed once per definition, and only ever the definition read."""

import pytest
from pydantic import ValidationError

from shared.contract.events import ExecuteRequest
from shared.contract.tools import DECLARED_BEFORE, ReadTools, Tool
from tests.factories import work_item


def _body(**tool: object) -> bytes:
    request = {"url": "https://api.example.com/slots", "method": "POST"}
    return work_item(request, {"date": "2026-12-05"}, **tool).model_dump_json().encode()


def _read(body: bytes) -> ExecuteRequest:
    return ExecuteRequest.model_validate_json(body, context=DECLARED_BEFORE)


def test_work_items_of_one_definition_share_one_tool() -> None:
    body = _body(description="Lists free slots.")

    first, second = _read(body), _read(body)

    assert first.tool is second.tool
    assert first.model_dump_json().encode() == body


def test_a_changed_definition_of_the_same_name_is_read_as_itself() -> None:
    before = _read(_body(description="Lists free slots."))

    after = _read(_body(description="Lists free slots, by stylist."))

    assert after.tool is not before.tool
    assert after.tool.description == "Lists free slots, by stylist."
    # and the first one, read again, is itself again
    assert _read(_body(description="Lists free slots.")).tool.description == "Lists free slots."


def test_tools_of_the_same_name_in_two_accounts_are_never_shared() -> None:
    ours = _read(_body(owner_account="acme"))

    theirs = _read(_body(owner_account="globex"))

    assert theirs.tool is not ours.tool
    assert (ours.tool.owner_account, theirs.tool.owner_account) == ("acme", "globex")


def test_a_declaration_is_checked_whole_whatever_was_read_before() -> None:
    body = _body(parameters={"type": "object", "properties": {}})
    # A definition no declaration passes, read from a message (where it is not checked again).
    broken = body.replace(b'"type":"object"', b'"type":"array"', 1)
    assert _read(broken).tool.parameters["type"] == "array"

    with pytest.raises(ValidationError, match='"type": "object" at the top level'):
        ExecuteRequest.model_validate_json(broken)


def test_the_oldest_definition_is_forgotten_past_the_size() -> None:
    tools = ReadTools(size=2)
    parsed: list[str] = []

    def parse(value: object) -> Tool:
        tool = Tool.model_validate(value, context=DECLARED_BEFORE)
        parsed.append(tool.name)
        return tool

    definitions = [
        {"name": name, "request": {"url": "https://api.example.com/x"}} for name in "ABC"
    ]
    for definition in [*definitions, definitions[2], definitions[0]]:
        tools.read(dict(definition), parse)

    assert parsed == ["A", "B", "C", "A"]  # C was known; A had been forgotten
