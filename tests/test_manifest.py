"""LLM function-calling declarations, per provider: pure shapes, no I/O."""

from typing import Any

from shared.contract import manifest
from shared.contract.tools import Tool

BOOKING_PARAMETERS = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "date": {"type": "string", "description": "YYYY-MM-DD", "examples": ["2024-04-20"]},
        "From": {"type": "string"},
        "service": {"type": "string", "enum": ["Haircut", "Color"]},
    },
    "required": ["date", "From"],
    "additionalProperties": False,
}


def booking(parameters: dict[str, Any] | None = None) -> Tool:
    return Tool.model_validate(
        {
            "name": "BookAppointment",
            "description": "Books an appointment",
            "parameters": parameters or BOOKING_PARAMETERS,
            "context_parameters": [{"name": "From"}],
            "request": {"url": "https://api.example.com/book"},
        }
    )


def test_llm_parameters_leave_out_context_parameters() -> None:
    assert manifest.llm_parameters(booking()) == {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {
            "date": {"type": "string", "description": "YYYY-MM-DD", "examples": ["2024-04-20"]},
            "service": {"type": "string", "enum": ["Haircut", "Color"]},
        },
        "required": ["date"],
        "additionalProperties": False,
    }


def test_llm_parameters_do_not_change_the_tool() -> None:
    tool = booking()

    manifest.llm_parameters(tool)

    assert tool.parameters == BOOKING_PARAMETERS


def test_required_is_left_out_when_only_context_parameters_were_required() -> None:
    tool = booking(
        {"type": "object", "properties": {"From": {"type": "string"}}, "required": ["From"]}
    )

    assert manifest.llm_parameters(tool) == {"type": "object", "properties": {}}


def test_openai_wraps_each_tool_as_a_function() -> None:
    assert manifest.openai([booking()]) == [
        {
            "type": "function",
            "function": {
                "name": "BookAppointment",
                "description": "Books an appointment",
                "parameters": manifest.llm_parameters(booking()),
            },
        }
    ]


def test_anthropic_uses_input_schema() -> None:
    assert manifest.anthropic([booking()]) == [
        {
            "name": "BookAppointment",
            "description": "Books an appointment",
            "input_schema": manifest.llm_parameters(booking()),
        }
    ]


def test_gemini_puts_every_declaration_in_one_tool_object() -> None:
    other = Tool.model_validate(
        {
            "name": "Cancel",
            "request": {"url": "https://x.example/c"},
            "parameters": {"type": "object", "properties": {"id": {"type": "integer"}}},
        }
    )

    assert manifest.gemini([booking(), other]) == [
        {
            "functionDeclarations": [
                {
                    "name": "BookAppointment",
                    "description": "Books an appointment",
                    "parameters": {
                        "type": "object",
                        "properties": {
                            "date": {"type": "string", "description": "YYYY-MM-DD"},
                            "service": {"type": "string", "enum": ["Haircut", "Color"]},
                        },
                        "required": ["date"],
                    },
                },
                {
                    "name": "Cancel",
                    "description": "",
                    "parameters": {"type": "object", "properties": {"id": {"type": "integer"}}},
                },
            ],
        }
    ]


def test_gemini_leaves_out_parameters_of_a_function_that_has_none_for_the_llm() -> None:
    tool = booking({"type": "object", "properties": {"From": {"type": "string"}}})

    assert manifest.gemini([tool]) == [
        {
            "functionDeclarations": [
                {"name": "BookAppointment", "description": "Books an appointment"},
            ]
        }
    ]


def test_gemini_without_tools_is_an_empty_list() -> None:
    assert manifest.gemini([]) == []


def test_gemini_schema_drops_unsupported_keys_at_every_depth() -> None:
    schema = {
        "$id": "urn:booking",
        "$defs": {"x": {"type": "string"}},
        "type": "object",
        "properties": {
            "slot": {
                "type": "object",
                "additionalProperties": False,
                "properties": {"time": {"type": "string", "const": "10:00", "format": "time"}},
            },
            "tags": {
                "type": "array",
                "items": {"type": "string", "examples": ["a"]},
                "minItems": 1,
            },
            "either": {"anyOf": [{"type": "string", "$comment": "x"}, {"type": "integer"}]},
            # A property may be named like a keyword; it is a name here, not a keyword.
            "additionalProperties": {"type": "boolean"},
        },
    }

    assert manifest.gemini_schema(schema) == {
        "type": "object",
        "properties": {
            "slot": {
                "type": "object",
                "properties": {"time": {"type": "string", "format": "time"}},
            },
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1},
            "either": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
            "additionalProperties": {"type": "boolean"},
        },
    }


def test_gemini_schema_turns_a_null_union_type_into_nullable() -> None:
    assert manifest.gemini_schema({"type": ["string", "null"], "maxLength": 9}) == {
        "type": "string",
        "maxLength": 9,
        "nullable": True,
    }


def test_gemini_schema_keeps_an_enum_of_strings_only_with_null_as_nullable() -> None:
    # A python tool's `unit: Literal["c", "f"] | None` and `days: Literal[1, 2, 3]`.
    nullable_strings = {"type": ["string", "null"], "enum": ["c", "f", None]}
    numbers = {"type": "integer", "enum": [1, 2, 3]}

    assert manifest.gemini_schema(nullable_strings) == {
        "type": "string",
        "enum": ["c", "f"],
        "nullable": True,
    }
    assert manifest.gemini_schema(numbers) == {"type": "integer"}


def test_render_picks_the_provider() -> None:
    tools = [booking()]

    assert manifest.render("openai", tools) == manifest.openai(tools)
    assert manifest.render("anthropic", tools) == manifest.anthropic(tools)
    assert manifest.render("gemini", tools) == manifest.gemini(tools)
