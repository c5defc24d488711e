"""How python tools (CallKaro's "Advanced Mode" functions) are checked before they are saved."""

import textwrap
from pathlib import Path
from typing import Any

import pytest

from services.registry.dialects.python_function import (
    DEFAULT_MODULES,
    Problem,
    PythonFunction,
    PythonToolError,
    parse_function,
)
from tests.dialect_support import example

# The documented example, as written. `\x20` keeps the whitespace-only lines the
# documentation has inside the docstring without trailing spaces in this file.
# CallKaro's documented example, exactly as its documentation shows it.
WEATHER_EXAMPLE = example("callkaro_get_weather.py")
WEATHER = PythonFunction(
    name="get_weather",
    description="Get weather forecast for a location.",
    parameters={
        "type": "object",
        "properties": {
            "location": {"type": "string", "description": "City name or coordinates"},
            "days": {
                "type": "integer",
                "default": 1,
                "description": "Number of days for forecast (1-7)",
            },
        },
        "required": ["location"],
    },
    secrets=(),
)

GENERIC_EXAMPLE = '''\
async def function_name(ctx: RunContext, param1: str, param2: int = 1) -> dict:
    """
    Function description for AI

    Args:
        ctx: RunContext object
        param1: Description of param1
        param2: Description of param2

    Returns:
        dict: {"status": "success", "data": {...}}
    """
    return {"status": "success", "data": {}}
'''

# A valid tool; line 1 is its `async def`.
LOOKUP = '''\
async def lookup(ctx: RunContext, city: str) -> dict:
    """Look up a city.

    Args:
        city: The city's name.
    """
    return {"status": "success", "city": city}
'''


def code(text: str) -> str:
    return textwrap.dedent(text)


def problems_in(source: str, allowed: frozenset[str] = DEFAULT_MODULES) -> list[Problem]:
    with pytest.raises(PythonToolError) as caught:
        parse_function(source, allowed)
    return caught.value.problems


def found(source: str) -> list[tuple[str, int]]:
    """The (rule, line) of every problem in the source, in the order reported."""
    return [(problem.rule, problem.line) for problem in problems_in(source)]


def only_problem(source: str) -> Problem:
    [problem] = problems_in(source)
    return problem


def tool_taking(parameter: str) -> str:
    """A valid tool whose one parameter besides ctx is `parameter`, all on line 1."""
    return code(f'''\
        async def tool(ctx: RunContext, {parameter}) -> dict:
            """Do one thing.

            Args:
                value: The value.
            """
            return {{"status": "success"}}
        ''')


def schema_of(parameter: str) -> dict[str, Any]:
    """The JSON Schema property of the parameter, without its description."""
    properties = parse_function(tool_taking(parameter)).parameters["properties"]
    return {key: value for key, value in properties["value"].items() if key != "description"}


def tool_with_body(*statements: str) -> str:
    """A tool whose body is the statements, which start on line 7."""
    body = "".join(f"    {statement}\n" for statement in statements)
    return LOOKUP.replace('    return {"status": "success", "city": city}\n', body)


# --- the documented examples ------------------------------------------------------


def test_the_documented_weather_example_is_accepted_as_written() -> None:
    assert parse_function(WEATHER_EXAMPLE) == WEATHER


def test_the_documented_generic_signature_is_accepted() -> None:
    assert parse_function(GENERIC_EXAMPLE) == PythonFunction(
        name="function_name",
        description="Function description for AI",
        parameters={
            "type": "object",
            "properties": {
                "param1": {"type": "string", "description": "Description of param1"},
                "param2": {
                    "type": "integer",
                    "description": "Description of param2",
                    "default": 1,
                },
            },
            "required": ["param1"],
        },
        secrets=(),
    )


def test_the_summary_is_the_first_paragraph_joined_into_one_line() -> None:
    source = code('''\
        async def lookup(ctx: RunContext, city: str) -> dict:
            """Look up a city
            by its name.

            More details the AI does not need.

            Args:
                city (str): The city's name,
                    as the caller said it.
            """
            return {"status": "success"}
        ''')
    tool = parse_function(source)
    assert tool.description == "Look up a city by its name."
    assert tool.parameters["properties"]["city"]["description"] == (
        "The city's name, as the caller said it."
    )


# --- the code is read, never run --------------------------------------------------


def test_the_code_is_only_read_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    source = code(f'''\
        raise SystemExit
        import os; os._exit(1)
        open({str(marker)!r}, "w").write("ran")
        async def tool(
            ctx: RunContext, path: str = open({str(marker)!r}, "w").name
        ) -> dict:
            """Do one thing.

            Args:
                path: Where.
            """
            return {{"status": "success"}}
        ''')
    assert found(source) == [
        ("top_level", 1),
        ("top_level", 2),
        ("imports", 2),
        ("top_level", 3),
        ("defaults", 5),
    ]
    assert not marker.exists()


# --- rule "syntax" and "size" -----------------------------------------------------


def test_code_that_does_not_parse_is_reported_with_its_line_alone() -> None:
    source = code("""\
        import os

        async def tool(ctx: RunContext -> dict:
            return None
        """)
    problem = only_problem(source)
    assert (problem.rule, problem.line) == ("syntax", 3)
    assert problem.message.startswith("line 3: the code is not valid Python: ")


def test_a_nul_byte_is_a_syntax_problem_on_its_line() -> None:
    problem = only_problem(LOOKUP.replace("Look up", "Look\0up"))
    assert (problem.rule, problem.line) == ("syntax", 2)
    assert "NUL byte" in problem.message


def test_a_lone_surrogate_is_a_syntax_problem_on_its_line() -> None:
    # A JSON escape (\\ud800) may carry one; no UTF-8 encoder, ast's included, takes it.
    problem = only_problem(LOOKUP.replace("Look up", "Look\ud800up"))
    assert (problem.rule, problem.line) == ("syntax", 2)
    assert problem.message == "line 2: the code is not valid Python: it contains a lone surrogate"


def test_code_longer_than_65536_characters_is_refused() -> None:
    problem = only_problem(LOOKUP + "#" * (65_537 - len(LOOKUP)))
    assert (problem.rule, problem.line) == ("size", 0)
    assert problem.message == "the code has 65,537 characters; the limit is 65,536"


def test_code_of_exactly_65536_characters_is_checked() -> None:
    assert parse_function(LOOKUP + "#" * (65_536 - len(LOOKUP))).name == "lookup"


def test_code_nested_too_deeply_to_check_is_refused() -> None:
    problem = only_problem(tool_taking("value: " + "None | " * 900 + "str"))
    assert (problem.rule, problem.line) == ("size", 0)
    assert "nested too deeply" in problem.message


# --- rule "function" and "top_level" ----------------------------------------------


def test_code_without_a_top_level_function_has_no_tool() -> None:
    source = code('''\
        import json
        class Tool:
            async def run(self, ctx: RunContext) -> dict:
                """Run."""
                return {"status": "success"}
        ''')
    problem = only_problem(source)
    assert (problem.rule, problem.line) == ("function", 0)
    assert "no top-level function" in problem.message


def test_the_first_top_level_function_is_the_tool_and_later_ones_are_helpers() -> None:
    helper = "def helper(value):\n    return value\n"
    assert parse_function(LOOKUP + helper).name == "lookup"
    assert ("async", 1) in found(helper + LOOKUP)


@pytest.mark.parametrize(
    "statement",
    [
        "print(1)",
        "raise SystemExit",
        "if True:\n    pass",
        "for item in range(3):\n    pass",
        "while False:\n    pass",
        "try:\n    pass\nexcept Exception:\n    pass",
        "with open('/tmp/x', 'w') as f:\n    pass",
        "handle = open('/tmp/x', 'w')",
        "settings.debug = True",
        "counter += 1",
    ],
)
def test_statements_that_would_run_on_loading_are_refused_at_the_top_level(
    statement: str,
) -> None:
    problem = only_problem(statement + "\n" + LOOKUP)
    assert (problem.rule, problem.line) == ("top_level", 1)
    assert problem.message == (
        "line 1: only imports, definitions and constants at the top level: "
        "code there would run when the tool is loaded"
    )


def test_imports_constants_docstrings_classes_and_helpers_may_be_top_level() -> None:
    before = code('''\
        """Weather tools."""
        from __future__ import annotations
        import json
        BASE_URL = "https://api.example.com"
        LIMITS: dict[str, int] = {"days": 7}
        TIMEOUT: float
        class Unit:
            CELSIUS = "c"
        ''')
    after = code("""\
        def helper(value):
            return json.dumps(value)
        async def other_helper():
            pass
        """)
    assert parse_function(before + LOOKUP + after).name == "lookup"


# --- rule "async" -----------------------------------------------------------------


def test_the_tool_must_be_an_async_def() -> None:
    problem = only_problem(LOOKUP.replace("async def", "def"))
    assert (problem.rule, problem.line) == ("async", 1)
    assert problem.message == (
        "line 1: the tool must be an `async def` (CallKaro's rule: Must be async def)"
    )


# --- rule "ctx" -------------------------------------------------------------------


@pytest.mark.parametrize(
    "signature",
    [
        "lookup(ctx: RunContext, city: str)",
        'lookup(ctx: "RunContext", city: str)',
        "lookup(ctx: agents.RunContext, city: str)",
    ],
)
def test_the_first_parameter_is_ctx_annotated_run_context(signature: str) -> None:
    source = LOOKUP.replace("lookup(ctx: RunContext, city: str)", signature)
    assert parse_function(source).name == "lookup"


@pytest.mark.parametrize(
    ("signature", "line"),
    [
        ("lookup(\n    context: RunContext,\n    city: str,\n)", 2),
        ("lookup(\n    ctx: dict,\n    city: str,\n)", 2),
        ("lookup(\n    ctx,\n    city: str,\n)", 2),
        ("lookup(\n    city: str,\n)", 2),
    ],
)
def test_a_missing_or_misnamed_or_misannotated_ctx_is_refused(signature: str, line: int) -> None:
    source = LOOKUP.replace("lookup(ctx: RunContext, city: str)", signature)
    problem = only_problem(source)
    assert (problem.rule, problem.line) == ("ctx", line)
    assert "the first parameter must be `ctx: RunContext`" in problem.message


def test_a_tool_without_parameters_lacks_ctx() -> None:
    source = code('''\
        async def ping() -> dict:
            """Check the service is up."""
            return {"status": "success"}
        ''')
    assert found(source) == [("ctx", 1)]


# --- rule "parameters" ------------------------------------------------------------


def test_catch_all_keyword_only_and_positional_only_parameters_are_refused() -> None:
    source = code('''\
        async def tool(
            ctx: RunContext,
            city: str,
            /,
            *args: str,
            unit: str = "c",
            **kwargs: str,
        ) -> dict:
            """Do one thing.

            Args:
                city: The city.
                unit: The unit.
            """
            return {"status": "success"}
        ''')
    problems = problems_in(source)
    assert [(problem.rule, problem.line) for problem in problems] == [
        ("parameters", 2),
        ("parameters", 3),
        ("parameters", 5),
        ("parameters", 6),
        ("parameters", 7),
    ]
    assert problems[1].message == (
        "line 3: `city` is positional-only (before `/`); a tool takes only plain named parameters"
    )
    assert "`*args` is not allowed" in problems[2].message
    assert "`unit` is keyword-only (after `*`)" in problems[3].message
    assert "`**kwargs` is not allowed" in problems[4].message


@pytest.mark.parametrize("name", ["v" * 65, "café"])
def test_parameter_names_are_1_to_64_ascii_letters_digits_or_underscores(
    name: str,
) -> None:
    source = tool_taking(f"{name}: str").replace("value:", f"{name}:")
    problem = only_problem(source)
    assert (problem.rule, problem.line) == ("parameters", 1)
    assert "must be 1-64 ASCII letters, digits or _" in problem.message


def test_a_64_character_parameter_name_is_fine() -> None:
    name = "v" * 64
    tool = parse_function(tool_taking(f"{name}: str").replace("value:", f"{name}:"))
    assert tool.parameters["required"] == [name]


# --- rule "annotations" -----------------------------------------------------------


def test_every_parameter_but_ctx_needs_a_type_annotation() -> None:
    source = code('''\
        async def tool(
            ctx,
            city,
        ) -> dict:
            """Do one thing.

            Args:
                city: The city.
            """
            return {"status": "success"}
        ''')
    assert found(source) == [("ctx", 2), ("annotations", 3)]
    assert "parameter `city` has no type annotation" in problems_in(source)[1].message


def test_the_return_annotation_is_required() -> None:
    problem = only_problem(LOOKUP.replace(" -> dict:", ":"))
    assert (problem.rule, problem.line) == ("annotations", 1)
    assert "return annotation `-> dict`" in problem.message


def test_the_return_annotation_must_be_a_dict() -> None:
    source = LOOKUP.replace("city: str) -> dict:", "\n    city: str,\n) -> str:")
    problem = only_problem(source)
    assert (problem.rule, problem.line) == ("annotations", 3)
    assert "return annotation is `str`; it must be `dict`" in problem.message


@pytest.mark.parametrize(
    "annotation", ["dict[str, Any]", "Dict", "Dict[str, Any]", '"dict"', "typing.Dict"]
)
def test_any_spelling_of_dict_is_a_fine_return_annotation(annotation: str) -> None:
    assert parse_function(LOOKUP.replace("-> dict:", f"-> {annotation}:")).name == "lookup"


# --- rule "types" -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("annotation", "schema"),
    [
        ("str", {"type": "string"}),
        ("int", {"type": "integer"}),
        ("float", {"type": "number"}),
        ("bool", {"type": "boolean"}),
        ("dict", {"type": "object"}),
        ("Dict", {"type": "object"}),
        (
            "dict[str, int]",
            {"type": "object", "additionalProperties": {"type": "integer"}},
        ),
        (
            "Dict[str, str]",
            {"type": "object", "additionalProperties": {"type": "string"}},
        ),
        ("dict[str, Any]", {"type": "object"}),
        ("list", {"type": "array"}),
        ("list[str]", {"type": "array", "items": {"type": "string"}}),
        ("List[int]", {"type": "array", "items": {"type": "integer"}}),
        ("list[Any]", {"type": "array"}),
        (
            "list[dict[str, float]]",
            {
                "type": "array",
                "items": {"type": "object", "additionalProperties": {"type": "number"}},
            },
        ),
        ("Any", {}),
        ("typing.Any", {}),
        ('Literal["c", "f"]', {"type": "string", "enum": ["c", "f"]}),
        ("Literal[1, 2, 3]", {"type": "integer", "enum": [1, 2, 3]}),
        ('Literal["auto", 0]', {"enum": ["auto", 0]}),
        ("Optional[str]", {"type": ["string", "null"]}),
        ("typing.Optional[int]", {"type": ["integer", "null"]}),
        ("Union[int, None]", {"type": ["integer", "null"]}),
        ("Union[None, float]", {"type": ["number", "null"]}),
        ("str | None", {"type": ["string", "null"]}),
        ("None | bool", {"type": ["boolean", "null"]}),
        ("list[str] | None", {"type": ["array", "null"], "items": {"type": "string"}}),
        (
            'Literal["c", "f"] | None',
            {"type": ["string", "null"], "enum": ["c", "f", None]},
        ),
        ('Literal["auto", 0] | None', {"enum": ["auto", 0, None]}),
        ("Any | None", {}),
        ("Optional[str | None]", {"type": ["string", "null"]}),
        ('"str"', {"type": "string"}),
        (
            '"list[int] | None"',
            {"type": ["array", "null"], "items": {"type": "integer"}},
        ),
        ('list["str"]', {"type": "array", "items": {"type": "string"}}),
    ],
)
def test_each_allowed_type_maps_to_its_json_schema(annotation: str, schema: dict[str, Any]) -> None:
    assert schema_of(f"value: {annotation}") == schema


@pytest.mark.parametrize(
    "annotation",
    [
        "set",
        "set[str]",
        "tuple[int, int]",
        "bytes",
        "Callable",
        "Callable[[], None]",
        "WeatherRequest",
        "None",
        "Optional[None]",
        "str | int",
        "Union[str, int]",
        "dict[int, str]",
        "list[set]",
        "list[int, str]",
        "Literal[None]",
        "Literal[b'x']",
        "Literal[()]",
        "'not a type ('",
        "'WeatherRequest'",
    ],
)
def test_types_a_tool_cannot_take_are_refused(annotation: str) -> None:
    problem = only_problem(tool_taking(f"value: {annotation}"))
    assert (problem.rule, problem.line) == ("types", 1)
    assert problem.message.startswith(f"line 1: parameter `value` has type `{annotation}`")
    assert "(CallKaro's rule: parameter types must be JSON-serializable)" in problem.message


# --- rule "defaults" --------------------------------------------------------------


@pytest.mark.parametrize(
    ("parameter", "default"),
    [
        ("value: int = 1", 1),
        ("value: int = -3", -3),
        ("value: float = 1", 1),
        ("value: float = 0.5", 0.5),
        ("value: bool = False", False),
        ('value: str = "c"', "c"),
        ("value: str | None = None", None),
        ("value: Optional[int] = 2", 2),
        ("value: list[str] = []", []),
        ('value: list[str] = ["a"]', ["a"]),
        ('value: dict[str, int] = {"a": 1}', {"a": 1}),
        ('value: Literal["c", "f"] = "f"', "f"),
        ("value: Any = [1, {}]", [1, {}]),
    ],
)
def test_literal_defaults_of_the_parameters_type_are_kept(parameter: str, default: Any) -> None:
    tool = parse_function(tool_taking(parameter))
    assert tool.parameters["properties"]["value"]["default"] == default
    assert tool.parameters["required"] == []


@pytest.mark.parametrize(
    "parameter",
    [
        "value: str = str(1)",
        "value: str = DEFAULT_CITY",
        "value: list = {1, 2}",
        'value: bytes = b"x"',
        "value: float = 1e999",
        "value: str = None",
        "value: int = True",
        "value: int = 1.5",
        'value: int = "1"',
        "value: list = (1, 2)",
        'value: dict = {1: "a"}',
        'value: list[int] = ["a"]',
        'value: dict[str, int] = {"a": "b"}',
        'value: Literal["c", "f"] = "k"',
        "value: Literal[1, 2] = True",
    ],
)
def test_defaults_must_be_json_literals_of_the_parameters_type(parameter: str) -> None:
    [problem] = [
        problem for problem in problems_in(tool_taking(parameter)) if problem.rule == "defaults"
    ]
    assert problem.line == 1
    assert problem.message.startswith("line 1: the default of `value`")


def test_a_default_on_its_own_line_is_reported_there() -> None:
    source = code('''\
        async def tool(
            ctx: RunContext,
            days: int =
                "7",
        ) -> dict:
            """Do one thing.

            Args:
                days: How many days.
            """
            return {"status": "success"}
        ''')
    problem = only_problem(source)
    assert (problem.rule, problem.line) == ("defaults", 4)
    assert problem.message == (
        "line 4: the default of `days`, '7', does not match its type "
        "(CallKaro's rule: parameters must be JSON-serializable)"
    )


# --- rule "docstring" -------------------------------------------------------------


def test_without_a_docstring_the_summary_and_every_parameter_are_missing() -> None:
    source = code("""\
        async def tool(
            ctx: RunContext,
            city: str,
            days: int = 1,
        ) -> dict:
            return {"status": "success"}
        """)
    assert found(source) == [("docstring", 1), ("docstring", 3), ("docstring", 4)]
    assert problems_in(source)[0].message == (
        "line 1: the tool needs a docstring that starts with a summary "
        "(CallKaro's rule: must include a detailed docstring)"
    )


def test_a_docstring_that_starts_with_its_args_has_no_summary() -> None:
    source = LOOKUP.replace('"""Look up a city.\n\n    Args:', '"""\n    Args:')
    problem = only_problem(source)
    assert (problem.rule, problem.line) == ("docstring", 1)
    assert "starts with a summary" in problem.message


def test_each_undocumented_parameter_is_reported_on_its_line() -> None:
    source = code('''\
        async def tool(
            ctx: RunContext,
            city: str,
            days: int = 1,
        ) -> dict:
            """Get the forecast.

            Args:
                city: The city.
                days:
            """
            return {"status": "success"}
        ''')
    problem = only_problem(source)
    assert (problem.rule, problem.line) == ("docstring", 4)
    assert "parameter `days` is not described under Args: in the docstring" in (problem.message)


def test_args_entries_that_are_not_parameters_are_reported_on_their_line() -> None:
    source = LOOKUP.replace(
        "        city: The city's name.\n",
        "        ctx: The context.\n"
        "        city: The city's name.\n"
        "        country: Its country.\n",
    )
    problem = only_problem(source)
    assert (problem.rule, problem.line) == ("docstring", 7)
    assert "the docstring's Args: lists `country`, which is not a parameter" in (problem.message)


def test_the_args_line_numbers_follow_leading_blank_docstring_lines() -> None:
    source = LOOKUP.replace('"""Look up a city.', '"""\n\n    Look up a city.').replace(
        "        city: The city's name.\n", "        town: The town.\n"
    )
    assert found(source) == [("docstring", 1), ("docstring", 7)]


# --- rule "returns" ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("statement", "fault"),
    [
        ("return", "returns nothing"),
        ("return None", "returns nothing"),
        ('return "done"', "returns something that is not a dict"),
        ("return [city]", "returns something that is not a dict"),
        ('return {"city": city}', "returns a dict without a `status` key"),
        (
            'return {"status": "ok"}',
            'returns the status \'ok\', which is not "success" or "error"',
        ),
        (
            'return {"status": 200}',
            'returns the status 200, which is not "success" or "error"',
        ),
    ],
)
def test_returns_that_cannot_be_a_dict_with_a_status_are_refused(
    statement: str, fault: str
) -> None:
    problem = only_problem(
        tool_with_body("if not city:", f"    {statement}", "return {'status': 'success'}")
    )
    assert (problem.rule, problem.line) == ("returns", 8)
    assert problem.message == (
        f"line 8: this `return` {fault} (CallKaro's rule: "
        'must return a dict with a status field, "success" or "error")'
    )


def test_a_tool_that_never_returns_is_refused() -> None:
    problem = only_problem(tool_with_body("print(city)"))
    assert (problem.rule, problem.line) == ("returns", 1)
    assert "the tool never returns" in problem.message


def test_nested_functions_returns_and_values_known_at_run_time_are_fine() -> None:
    source = tool_with_body(
        "def nested():",
        "    return",
        "class Helper:",
        "    def method(self):",
        "        return None",
        "result = {'status': 'success'}",
        "if city:",
        "    return result",
        "if not city:",
        "    return {**result, 'city': city}",
        "return dict(status='error', message='no city')",
    )
    assert parse_function(source).name == "lookup"


# --- rule "imports" ---------------------------------------------------------------


def test_the_allowed_modules_may_be_imported() -> None:
    source = code("""\
        from __future__ import annotations
        import json, re, math
        import datetime as dt
        import logging
        from typing import Any
        import httpx
        from datetime import timedelta
        import typing
        """) + LOOKUP.replace("    return", "    import json\n    return")
    assert parse_function(source).name == "lookup"


@pytest.mark.parametrize(
    ("statement", "module"),
    [
        ("import os", "os"),
        ("import os.path", "os"),
        ("from os import path", "os"),
        ("from os.path import join", "os"),
        ("import subprocess as run", "subprocess"),
        ("import json, socket", "socket"),
    ],
)
def test_other_modules_cannot_be_imported(statement: str, module: str) -> None:
    problem = only_problem(statement + "\n" + LOOKUP)
    assert (problem.rule, problem.line) == ("imports", 1)
    assert problem.message == (
        f"line 1: `{module}` cannot be imported; "
        "allowed: datetime, httpx, json, logging, math, re, typing"
    )


def test_imports_inside_the_tool_are_checked_too() -> None:
    problem = only_problem(tool_with_body("from os import path", "return {'status': 'success'}"))
    assert (problem.rule, problem.line) == ("imports", 7)


def test_relative_imports_are_refused() -> None:
    problem = only_problem("from . import helpers\n" + LOOKUP)
    assert (problem.rule, problem.line) == ("imports", 1)
    assert "relative imports" in problem.message


def test_dunder_import_calls_are_left_to_the_run_time_sandbox() -> None:
    source = tool_with_body("os = __import__('os')", "return {'status': 'success'}")
    assert parse_function(source).name == "lookup"


def test_the_allowed_modules_can_be_chosen() -> None:
    source = "import yaml\n" + LOOKUP
    assert parse_function(source, DEFAULT_MODULES | {"yaml"}).name == "lookup"
    [problem] = problems_in(source, frozenset({"json"}))
    assert problem.message == "line 1: `yaml` cannot be imported; allowed: json"


# --- rule "secrets" ---------------------------------------------------------------


def test_the_secrets_a_tool_names_are_collected_sorted_and_unique() -> None:
    source = tool_with_body(
        'key = ctx.secrets["WEATHER_KEY"]',
        'token = ctx.secrets.get("TOKEN")',
        'region = ctx.secrets.get("REGION", "us")',
        'again = ctx.secrets["WEATHER_KEY"]',
        "def headers():",
        '    return {"x-api": ctx.secrets["NESTED_KEY"]}',
        "return {'status': 'success'}",
    ) + code("""\

        def helper(ctx):
            return ctx.secrets["HELPER_KEY"]
        """)
    assert parse_function(source).secrets == (
        "HELPER_KEY",
        "NESTED_KEY",
        "REGION",
        "TOKEN",
        "WEATHER_KEY",
    )


@pytest.mark.parametrize(
    "statement",
    [
        "key = ctx.secrets[city]",
        "key = ctx.secrets.get(city)",
        "key = ctx.secrets[0]",
        "keys = [name for name in ctx.secrets]",
        "everything = dict(ctx.secrets)",
        "print(ctx.secrets)",
        "pairs = ctx.secrets.items()",
        "secrets = getattr(ctx, 'secrets')",
        "ctx.secrets = {}",
        "ctx.secrets['KEY'] = 'value'",
        "key = ctx.secrets.get(name='KEY')",
    ],
)
def test_secrets_must_be_named_literally(statement: str) -> None:
    problem = only_problem(tool_with_body(statement, "return {'status': 'success'}"))
    assert (problem.rule, problem.line) == ("secrets", 7)
    assert problem.message == (
        'line 7: name each secret literally, as ctx.secrets["NAME"]: '
        "only the secrets a tool names are given to it"
    )


@pytest.mark.parametrize("name", ["my-key", "1KEY", "K" * 65, ""])
def test_secret_names_are_identifiers_of_at_most_64_characters(name: str) -> None:
    source = tool_with_body(f"key = ctx.secrets[{name!r}]", "return {'status': 'success'}")
    problem = only_problem(source)
    assert (problem.rule, problem.line) == ("secrets", 7)
    assert f"secret name {name!r} must be 1-64 ASCII letters, digits or _" in problem.message


# --- all problems at once ---------------------------------------------------------


def test_every_problem_is_reported_at_once_in_line_order() -> None:
    source = code('''\
        import os
        def tool(
            context,
            days: set,
        ):
            """
            Args:
                city: The city.
            """
            key = ctx.secrets[days]
            return {"result": days}
        ''')
    with pytest.raises(PythonToolError) as caught:
        parse_function(source)
    problems = caught.value.problems
    assert [(problem.rule, problem.line) for problem in problems] == [
        ("imports", 1),
        ("async", 2),
        ("annotations", 2),
        ("docstring", 2),
        ("ctx", 3),
        ("docstring", 3),
        ("annotations", 3),
        ("docstring", 4),
        ("types", 4),
        ("docstring", 8),
        ("secrets", 10),
        ("returns", 11),
    ]
    assert str(caught.value) == "; ".join(problem.message for problem in problems)
    assert all(problem.message.startswith(f"line {problem.line}: ") for problem in problems)
    assert isinstance(caught.value, ValueError)
