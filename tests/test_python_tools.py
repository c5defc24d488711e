"""Python tools end to end: NATS in, the function in its sandbox, the result event out.

Given a function registered as a python tool, when a runtime calls it, then
the function runs in the account's jail, its httpx requests reach the API
through Midcall's egress (with the call's trace), and the runtime hears the
result the function returned, or an error it can say.
"""

from typing import Any

from tests.support.api import RecordingApi
from tests.support.fabric import Fabric
from tests.test_dialects_end_to_end import call_tool, success
from tests.test_failed_calls import kept
from tests.test_spine import error_result, pending

AGENT = "migrated-bot"


def python_tool(code: str, function: str = "tool", **fields: Any) -> dict[str, Any]:
    properties = fields.pop("properties", {})
    return {
        "name": function,
        "kind": "python",
        "python": {"code": code, "function": function, **fields.pop("python", {})},
        "parameters": {"type": "object", "properties": properties},
        "response": {
            "tool_error": {"path": "$.status", "equals": "error", "message_path": "$.message"}
        },
        **fields,
    }


LOOKUP = '''
async def tool(ctx: RunContext, city: str) -> dict:
    """Look the city up."""
    async with httpx.AsyncClient(timeout=5.0) as client:
        response = await client.get(ctx.context["api"] + "/cities", params={"q": city})
    logger.info("looked up %s", city)
    return {"status": "success", "city": response.json()["name"], "call": ctx.call_id}
'''


async def test_a_function_calls_the_api_through_the_egress(
    fabric: Fabric, api: RecordingApi
) -> None:
    api.reply("GET", "/cities", json={"name": "Pune"})
    await fabric.register(AGENT, python_tool(LOOKUP, properties={"city": {"type": "string"}}))

    call, first, last = await call_tool(fabric, "tool", {"city": "pune"}, context={"api": api.url})

    assert first == pending(call, speech=None, speak=False)
    assert last == success(call, {"status": "success", "city": "Pune", "call": call["call_id"]})
    [received] = api.received
    assert received.query == [("q", "pune")]
    assert received.header("traceparent") is not None


async def test_an_exception_is_a_tool_error_naming_its_type_and_line(fabric: Fabric) -> None:
    code = (
        "async def tool(ctx: RunContext) -> dict:\n"
        '    """Fails."""\n'
        '    raise ValueError("no such city")\n'
    )
    await fabric.register(AGENT, python_tool(code))

    call, _, last = await call_tool(fabric, "tool", {})

    assert last == error_result(
        call,
        "tool_error",
        "The tool action failed: ValueError: no such city (line 3)",
        {"kind": "exception"},
        attempts=1,
    )


FLAKY = '''
async def tool(ctx: RunContext, city: str) -> dict:
    """Fails on its first run, as a function with a bug ops then fix would.

    Args:
        city: The city.
    """
    raise RuntimeError("the weather service moved")
'''


async def test_a_failed_function_is_kept_and_its_replay_planned_as_a_function_call(
    fabric: Fabric,
) -> None:
    await fabric.register(AGENT, python_tool(FLAKY, properties={"city": {"type": "string"}}))
    call, _, last = await call_tool(fabric, "tool", {"city": "Pune"})
    [row] = await kept(fabric, call_id=call["call_id"])

    planned = await fabric.registry.post(
        "/v1/failed/replay", json={"ids": [row["id"]], "dry_run": True}
    )

    assert last["error"]["code"] == "tool_error"
    assert planned.status_code == 200, planned.text
    [item] = planned.json()["items"]
    assert (item["status"], item["request"]) == ("planned", None)
    assert item["function"] == {"function": "tool", "arguments": {"city": "Pune"}, "secrets": []}
