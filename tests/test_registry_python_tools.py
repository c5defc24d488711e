"""Python tools over the registry's REST API: CallKaro's advanced functions and canonical ones.

Given a running registry, when a client posts a function (CallKaro's
``{"mode": "advanced", "code": ...}``, or a canonical tool of ``"kind": "python"``),
then the registry checks its code without running it and stores the tool its
code says: or answers 422 naming each rule the code breaks and its line.
"""

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.dialect_support import EXAMPLES, example
from tests.support.fabric import Fabric
from tests.support.keys import Keys
from tests.test_python_function import WEATHER
from tests.test_registry_dialects_api import assert_error, registry

SEED = example("callkaro_get_weather.py")
ADVANCED = {"mode": "advanced", "code": SEED}
STOCK = example("callkaro_product_availability.json")
TOOLS = "/v1/agents/weather-bot/tools"
TOOL_ERROR = {"path": "$.status", "equals": "error", "message_path": "$.message"}
# The seed as the registry stores it, but for its response rules.
GET_WEATHER: dict[str, Any] = {
    "name": "get_weather",
    "description": WEATHER.description,
    "parameters": WEATHER.parameters,
    "context_parameters": [],
    "kind": "python",
    "python": {"code": SEED, "function": "get_weather", "secrets": [], "timeout_s": 10.0},
    "speech": {"on_send": False, "from_argument": None, "on_receive": True, "muted": False},
    "errors": {"messages": {}, "end_conversation_on": []},
}


def json_of(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def response_rules(tool_error: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "variables": {},
        "result_path": None,
        "result_required": False,
        "result_type": "any",
        "agent_message_path": "$.agent_message",
        "tool_error": tool_error,
    }


@pytest.fixture
async def client(nats_url: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """A registry whose python tools may also import yaml (MIDCALL_SANDBOX_MODULES).

    On SQLite only: a python tool is stored as any other, which both databases are tested with.
    """
    database = f"sqlite:///{tmp_path / 'registry.db'}"
    async with registry(nats_url, database, tmp_path, sandbox_modules=" yaml, ") as http:
        yield http


async def post(client: httpx.AsyncClient, document: Any, dialect: str = "callkaro") -> Any:
    return await client.post(TOOLS, params={"dialect": dialect}, json=document)


async def test_callkaros_example_function_becomes_a_python_tool(
    client: httpx.AsyncClient,
) -> None:
    response = await post(client, ADVANCED)

    expected = {**GET_WEATHER, "response": response_rules(TOOL_ERROR)}
    assert (response.status_code, response.json()) == (
        201,
        {"agent_id": "weather-bot", "tools": [expected]},
    )
    assert (await client.get(f"{TOOLS}/get_weather")).json() == expected


async def test_it_reads_back_in_callkaro_as_the_code_posted(client: httpx.AsyncClient) -> None:
    await post(client, ADVANCED)

    response = await client.get(f"{TOOLS}/get_weather", params={"dialect": "callkaro"})

    assert response.json() == ADVANCED
    assert response.json()["code"].encode() == (EXAMPLES / "callkaro_get_weather.py").read_bytes()


# A function that breaks no rule; each case below breaks one, on the line given.
VALID = '''async def lookup(ctx: RunContext, city: str) -> dict:
    """Look up a city.

    Args:
        city: The city's name.
    """
    return {"status": "success", "city": city}
'''
RETURN = '    return {"status": "success", "city": city}'
BREAKING = [
    ("syntax", VALID.replace("city: str)", "city: str"), 1),
    ("size", VALID + "#" * (65_537 - len(VALID)), 0),
    ("function", '"""Helpers, and no function."""\nCITY = "Pune"\n', 0),
    ("top_level", "print('loading')\n" + VALID, 1),
    ("async", VALID.replace("async def", "def"), 1),
    ("ctx", VALID.replace("ctx: RunContext, ", ""), 1),
    ("parameters", VALID.replace("city: str)", "city: str, *rest: str)"), 1),
    ("annotations", VALID.replace(" -> dict", ""), 1),
    ("types", VALID.replace("city: str", "city: set"), 1),
    ("defaults", VALID.replace("city: str", "city: str = 7"), 1),
    ("docstring", VALID.replace("        city: The city's name.\n", ""), 1),
    ("returns", VALID.replace(RETURN, '    return "done"'), 7),
    ("imports", "import os\n" + VALID, 1),
    ("secrets", VALID.replace('"city": city}', '"key": ctx.secrets[city]}'), 7),
]


@pytest.mark.parametrize(("rule", "code", "line"), BREAKING, ids=[rule for rule, *_ in BREAKING])
async def test_each_rule_the_code_breaks_is_a_422_naming_it_and_its_line(
    client: httpx.AsyncClient, rule: str, code: str, line: int
) -> None:
    response = await post(client, {"mode": "advanced", "code": code})

    error = response.json()["error"]
    assert (response.status_code, error["code"]) == (422, "invalid_tool")
    found = {(problem["at"], problem["rule"], problem["line"]) for problem in error["details"]}
    assert found == {("functions[0].code", rule, line)}
    for problem in error["details"]:
        assert f"functions[0].code: [{rule}] {problem['message']}" in error["message"]
        assert problem["message"].startswith(f"line {line}: ") == (line > 0)
    assert (await client.get(TOOLS)).status_code == 404


async def test_the_imports_allowed_are_the_defaults_and_the_sandbox_modules(
    client: httpx.AsyncClient,
) -> None:
    refused = await post(client, {"mode": "advanced", "code": "import os\n" + VALID})
    allowed = await post(client, {"mode": "advanced", "code": "import yaml\n" + VALID})

    assert refused.json()["error"]["details"][0]["message"] == (
        "line 1: `os` cannot be imported; "
        "allowed: datetime, httpx, json, logging, math, re, typing, yaml"
    )
    assert allowed.status_code == 201, allowed.text


@pytest.mark.parametrize(
    "document", [{"functions": [STOCK, ADVANCED]}, [{**STOCK, "mode": "basic"}, ADVANCED]]
)
async def test_a_list_may_mix_basic_and_advanced_functions(
    client: httpx.AsyncClient, document: Any
) -> None:
    response = await post(client, document)

    assert response.status_code == 201, response.text
    tools = response.json()["tools"]
    assert [(t["name"], t.get("kind", "http")) for t in tools] == [
        ("check_product_availability", "http"),
        ("get_weather", "python"),
    ]
    assert tools[0]["response"]["result_path"] == "$.data"
    assert tools[1]["response"] == response_rules(TOOL_ERROR)


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        (
            {**ADVANCED, "description": "Weather"},
            "functions[0]: unknown field 'description' (fields: mode, code)",
        ),
        ({"mode": "advanced"}, "functions[0]: code is required: the function's Python source"),
        ({**ADVANCED, "mode": "expert"}, "functions[0]: mode must be basic or advanced"),
        (
            [STOCK, {**STOCK, "mode": "advanced"}],
            "function 'check_product_availability': unknown field 'name' (fields: mode, code); "
            "function 'check_product_availability': unknown field 'description' "
            "(fields: mode, code); function 'check_product_availability': unknown field "
            "'api_url' (fields: mode, code); function 'check_product_availability': unknown "
            "field 'method' (fields: mode, code); function 'check_product_availability': "
            "unknown field 'headers' (fields: mode, code); function "
            "'check_product_availability': unknown field 'parameters' (fields: mode, code); "
            "function 'check_product_availability': code is required: the function's Python "
            "source",
        ),
    ],
    ids=["unknown-field", "no-code", "mode", "basic-fields-in-advanced"],
)
async def test_what_an_advanced_function_does_not_take_is_a_422(
    client: httpx.AsyncClient, document: Any, problem: str
) -> None:
    response = await post(client, document)

    assert_error(response, 422, "invalid_tool", problem)


async def test_a_canonical_python_tool_may_leave_out_what_its_code_says(
    client: httpx.AsyncClient,
) -> None:
    response = await post(client, {"kind": "python", "python": {"code": SEED}}, "midcall")

    expected = {**GET_WEATHER, "response": response_rules(None)}
    assert (response.status_code, response.json()["tools"]) == (201, [expected])
    # Its response rules are not CallKaro's: it says so if read back as CallKaro's.
    exported = await client.get(f"{TOOLS}/get_weather", params={"dialect": "callkaro"})
    assert_error(
        exported,
        409,
        "not_expressible",
        "tool 'get_weather' cannot be expressed in callkaro: callkaro has no way to say "
        "response.tool_error",
    )


# Parameters are checked, not overwritten: a schema posted for the function that
# differs from its signature would tell the LLM something the function does not take.
@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        (
            "description",
            "Weather.",
            "tools[0].description must be the docstring's summary: "
            '"Get weather forecast for a location."; or leave it out',
        ),
        (
            "parameters",
            {"type": "object", "properties": {"location": {"type": "string"}}},
            "tools[0].parameters must be what the function's signature and its docstring's "
            f"Args: say: {json_of(GET_WEATHER['parameters'])}; or leave it out",
        ),
        (
            "python.function",
            "weather",
            "tools[0].python.function must be the name of the code's first top-level "
            'function, the tool: "get_weather"; or leave it out',
        ),
        (
            "python.secrets",
            ["WEATHER_KEY"],
            'tools[0].python.secrets must be what the code reads (ctx.secrets["NAME"]): []; '
            "or leave it out",
        ),
    ],
    ids=["description", "parameters", "function", "secrets"],
)
async def test_what_a_canonical_python_tool_says_otherwise_than_its_code_is_a_422(
    client: httpx.AsyncClient, field: str, value: Any, problem: str
) -> None:
    document = {**GET_WEATHER, "response": response_rules(TOOL_ERROR)}
    parent, _, key = field.rpartition(".")
    if parent:
        document[parent] = {**document[parent], key: value}
    else:
        document[key] = value

    response = await post(client, document, "midcall")

    assert_error(response, 422, "invalid_tool", problem)
    assert response.json()["error"]["details"] == [problem]


async def test_a_canonical_python_tools_code_is_checked_by_the_same_rules(
    client: httpx.AsyncClient,
) -> None:
    code = VALID.replace("async def", "def")

    response = await post(client, {"kind": "python", "python": {"code": code}}, "midcall")

    assert response.json()["error"]["details"] == [
        {
            "at": "tools[0].python.code",
            "rule": "async",
            "line": 1,
            "message": "line 1: the tool must be an `async def` (CallKaro's rule: "
            "Must be async def)",
        }
    ]


@pytest.mark.parametrize("dialect", ["vocode", "bland", "aivoco", "xml"])
async def test_a_python_tool_cannot_be_read_in_a_dialect_without_code(
    client: httpx.AsyncClient, dialect: str
) -> None:
    await post(client, ADVANCED)

    response = await client.get(f"{TOOLS}/get_weather", params={"dialect": dialect})

    assert_error(
        response,
        409,
        "not_expressible",
        f"tool 'get_weather' cannot be expressed in {dialect}: it is a python tool "
        "(a function in its own code), which only midcall and callkaro can express",
    )


async def test_a_python_tools_manifest_is_its_signature(client: httpx.AsyncClient) -> None:
    await post(client, ADVANCED)

    response = await client.get("/v1/agents/weather-bot/manifest", params={"format": "openai"})

    assert response.json() == {
        "format": "openai",
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "Get weather forecast for a location.",
                    "parameters": GET_WEATHER["parameters"],
                },
            }
        ],
    }


WITH_SECRET = SEED.replace('"YOUR_API_KEY"', 'ctx.secrets["WEATHER_KEY"]')


async def test_an_admins_python_tool_may_read_a_platform_secret(
    client: httpx.AsyncClient,
) -> None:
    response = await post(client, {"mode": "advanced", "code": WITH_SECRET})

    assert response.status_code == 201, response.text
    assert response.json()["tools"][0]["python"]["secrets"] == ["WEATHER_KEY"]


async def test_an_accounts_python_tool_reads_its_own_secrets_and_only_it_sees_it(
    fabric: Fabric, keys: Keys
) -> None:
    acme_tools = "/v1/agents/acme-bot/tools?dialect=callkaro"
    document = {"mode": "advanced", "code": WITH_SECRET}

    before = await fabric.registry.post(acme_tools, json=document, headers=keys.acme)
    await fabric.set_secret("acme", "WEATHER_KEY", "k-1", headers=keys.acme)
    after = await fabric.registry.post(acme_tools, json=document, headers=keys.acme)
    seen = await fabric.registry.get("/v1/agents/acme-bot/tools/get_weather", headers=keys.acme)
    unseen = await fabric.registry.get("/v1/agents/acme-bot/tools/get_weather", headers=keys.globex)

    assert_error(
        before,
        422,
        "unknown_secret",
        "account 'acme' has no secret WEATHER_KEY: set it first with "
        "PUT /v1/accounts/acme/secrets/{NAME}",
    )
    assert after.status_code == 201, after.text
    assert seen.json()["python"]["secrets"] == ["WEATHER_KEY"]
    assert unseen.status_code == 404
