"""CallKaro's advanced functions, and canonical python tools: their code is their tool.

Pure: the dialects' parsers and exports, without a registry (see
test_registry_python_tools.py for the same over REST).
"""

from typing import Any

import pytest

from services.registry import dialects
from services.registry.dialects import callkaro, midcall
from tests.dialect_support import example, rejection

SEED = example("callkaro_get_weather.py")
READS_SECRETS = SEED.replace('"YOUR_API_KEY"', 'ctx.secrets["WEATHER_KEY"] + ctx.secrets["REGION"]')


def advanced(code: str = SEED, **fields: Any) -> dict[str, Any]:
    return {"mode": "advanced", "code": code, **fields}


@pytest.mark.parametrize("code", [SEED, READS_SECRETS], ids=["seed", "secrets"])
@pytest.mark.parametrize("dialect", ["callkaro", "midcall"])
def test_parsing_the_export_gives_the_tool_back(code: str, dialect: str) -> None:
    (parsed,) = callkaro.parse(advanced(code))

    exported = dialects.export(dialect, parsed)

    assert dialects.parse(dialect, exported) == [parsed]


def test_the_secrets_are_those_the_code_reads_sorted() -> None:
    (parsed,) = callkaro.parse(advanced(READS_SECRETS))

    assert parsed.python is not None
    assert parsed.python.secrets == ["REGION", "WEATHER_KEY"]
    assert parsed.secret_names() == {"REGION", "WEATHER_KEY"}


def test_the_imports_are_checked_against_the_modules_given() -> None:
    code = "import httpx\n" + SEED

    error = rejection(lambda: dialects.parse("callkaro", advanced(code), frozenset({"json"})))

    assert error.details[0]["message"] == "line 1: `httpx` cannot be imported; allowed: json"


def test_every_problem_of_a_mixed_list_is_reported_at_once() -> None:
    basic = {**example("callkaro_product_availability.json"), "method": "PATCH"}
    broken = SEED.replace("async def", "def")

    error = rejection(lambda: callkaro.parse([basic, advanced(broken)]))

    assert error.details == [
        "function 'check_product_availability': method must be one of GET, POST, PUT, DELETE",
        {
            "at": "functions[1].code",
            "rule": "async",
            "line": 1,
            "message": "line 1: the tool must be an `async def` (CallKaro's rule: "
            "Must be async def)",
        },
    ]
    assert error.message == (
        "function 'check_product_availability': method must be one of GET, POST, PUT, "
        "DELETE; functions[1].code: [async] line 1: the tool must be an `async def` "
        "(CallKaro's rule: Must be async def)"
    )


def test_code_that_no_encoder_takes_is_a_syntax_problem() -> None:
    error = rejection(lambda: callkaro.parse(advanced(SEED.replace("Get", "\ud800Get"))))

    assert [(p["rule"], p["line"]) for p in error.details] == [("syntax", 7)]


# -- the same function as a canonical tool ---------------------------------------------------


def canonical(**python: Any) -> dict[str, Any]:
    return {"kind": "python", "python": {"code": SEED, **python}}


def test_a_canonical_tool_is_named_after_its_function_unless_it_says_otherwise() -> None:
    (derived,) = midcall.parse(canonical())
    (named,) = midcall.parse({**canonical(), "name": "weather"})

    assert (derived.name, named.name) == ("get_weather", "weather")
    assert named.python == derived.python


def test_secrets_may_be_listed_in_any_order() -> None:
    document = canonical(code=READS_SECRETS, secrets=["WEATHER_KEY", "REGION", "REGION"])

    (parsed,) = midcall.parse(document)

    assert parsed.python is not None
    assert parsed.python.secrets == ["REGION", "WEATHER_KEY"]


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (
            {"kind": "python", "python": {"code": 7}},
            "tools[0].name: Field required; tools[0].python.code: Input should be a valid "
            "string; tools[0].python.function: Field required",
        ),
        (
            {"name": "weather", "kind": "python"},
            'tools[0]: Value error, a python tool (kind "python") has python, no request',
        ),
        (
            {**canonical(), "request": {"url": "https://api.example.com"}},
            'tools[0]: Value error, a python tool (kind "python") has python, no request',
        ),
    ],
    ids=["code-not-text", "no-python", "request-too"],
)
def test_a_malformed_python_tool_is_left_to_the_canonical_rules(
    document: dict[str, Any], message: str
) -> None:
    error = rejection(lambda: midcall.parse(document))

    assert (error.status, error.message) == (422, message)
