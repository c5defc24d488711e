"""Python tools end to end: NATS in, the function in its sandbox, the result event out.

Given a function registered as a python tool, when a runtime calls it, then
the function runs in the account's jail, its httpx requests reach the API
through Midcall's egress (with the call's trace), and the runtime hears the
result the function returned, or an error it can say.
"""

import json
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services.code_executor.main import CodeExecutorService
from services.demo.runtime import new_traceparent
from tests.support.api import RecordingApi
from tests.support.fabric import Fabric
from tests.test_dialects_end_to_end import call_tool, example, success
from tests.test_failed_calls import kept
from tests.test_registry_dialects_api import registry
from tests.test_spine import error_result, events_of, new_call, pending, place

AGENT = "migrated-bot"
HTTP_TOOL = {"name": "Ping", "request": {"url": "https://api.example.com/ping"}}


def python_tool(code: str, function: str = "tool", **fields: Any) -> dict[str, Any]:
    """A canonical python tool: the registry reads its parameters off the signature."""
    return {
        "name": function,
        "kind": "python",
        "python": {"code": code, "function": function, **fields.pop("python", {})},
        "response": {
            "tool_error": {"path": "$.status", "equals": "error", "message_path": "$.message"}
        },
        **fields,
    }


LOOKUP = '''
async def tool(ctx: RunContext, city: str) -> dict:
    """Look the city up.

    Args:
        city: The city's name.
    """
    async with httpx.AsyncClient(timeout=5.0) as client:
        response = await client.get(ctx.context["api"] + "/cities", params={"q": city})
    logger.info("looked up %s", city)
    return {"status": "success", "city": response.json()["name"], "call": ctx.call_id}
'''


async def test_a_function_calls_the_api_through_the_egress(
    fabric: Fabric, api: RecordingApi
) -> None:
    api.reply("GET", "/cities", json={"name": "Pune"})
    await fabric.register(AGENT, python_tool(LOOKUP))

    call, first, last = await call_tool(fabric, "tool", {"city": "pune"}, context={"api": api.url})

    assert first == pending(call, speech=None, speak=False)
    assert last == success(call, {"status": "success", "city": "Pune", "call": call["call_id"]})
    [received] = api.received
    assert received.query == [("q", "pune")]
    assert received.header("traceparent") is not None


async def test_each_calls_request_is_traced_under_its_own_call(
    fabric: Fabric, api: RecordingApi, spans: InMemorySpanExporter
) -> None:
    """Calls in one account share its jail, never their traces: each request's client span
    is a child of its own call's run, and the API gets that span as its traceparent."""
    api.reply("GET", "/cities", json={"name": "Pune"})
    await fabric.register(AGENT, python_tool(LOOKUP))
    traces = [new_traceparent()[1] for _ in range(3)]

    for trace_id in traces:
        call = new_call(tool="tool", agent_id=AGENT, arguments={"city": "pune"})
        call["context"] = {"api": api.url}
        await place(fabric, call, traceparent=f"00-{trace_id}-{'1' * 16}-01")
    await fabric.drained()

    finished = spans.get_finished_spans()
    for trace_id, received in zip(traces, api.received, strict=True):
        ours = {s.context.span_id: s for s in finished if s.context.trace_id == int(trace_id, 16)}
        [client] = [s for s in ours.values() if s.name == "GET"]
        assert client.parent is not None
        assert ours[client.parent.span_id].name == "execute"
        assert received.header("traceparent") == f"00-{trace_id}-{client.context.span_id:016x}-01"


async def test_ending_the_conversation_stops_a_running_function(
    fabric: Fabric, api: RecordingApi
) -> None:
    api.reply("GET", "/cities", json={"name": "Pune"}, delay_s=30)
    quick = python_tool(TRIVIAL.replace("def tool", "def quick"), "quick")
    await fabric.register(AGENT, python_tool(LOOKUP), quick)
    call = new_call(tool="tool", agent_id=AGENT, arguments={"city": "pune"})
    call["context"] = {"api": api.url}
    await fabric.runtime.listen(call["conversation_id"])

    await fabric.runtime.call(call)
    await api.wait_for(1)
    await fabric.runtime.end(call["conversation_id"])
    await fabric.runtime.wait_for(call["conversation_id"], "result", call["call_id"])
    after, _, last = await call_tool(fabric, "quick", {})

    assert events_of(fabric, call)[-1] == error_result(
        call, "cancelled", "The conversation ended before the action finished.", attempts=0
    )
    assert last == success(after, {"status": "success"})


async def test_an_exception_is_a_tool_error_naming_its_type_and_line(fabric: Fabric) -> None:
    code = (
        "async def tool(ctx: RunContext) -> dict:\n"
        '    """Fails."""\n'
        "    if ctx.call_id:\n"
        '        raise ValueError("no such city")\n'
        '    return {"status": "success"}\n'
    )
    await fabric.register(AGENT, python_tool(code))

    call, _, last = await call_tool(fabric, "tool", {})

    assert last == error_result(
        call,
        "tool_error",
        "The tool action failed: ValueError: no such city (line 4)",
        {"kind": "exception"},
        attempts=1,
    )


FLAKY = '''
async def tool(ctx: RunContext, city: str) -> dict:
    """Fails on its first run, as a function with a bug ops then fix would.

    Args:
        city: The city.
    """
    if city:
        raise RuntimeError("the weather service moved")
    return {"status": "success"}
'''


async def test_a_failed_function_is_kept_and_its_replay_planned_as_a_function_call(
    fabric: Fabric,
) -> None:
    await fabric.register(AGENT, python_tool(FLAKY))
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


TRIVIAL = '''
async def tool(ctx: RunContext) -> dict:
    """Answers at once."""
    return {"status": "success"}
'''


async def test_where_the_sandbox_cannot_start_python_tools_are_refused_when_posted(
    nats_url: str, tmp_path: Path
) -> None:
    database = f"sqlite:///{tmp_path / 'registry.db'}"
    async with registry(nats_url, database, tmp_path, nsjail="/bin/false") as http:
        posted = await http.post(
            f"/v1/agents/{AGENT}/tools", json={"tools": [python_tool(TRIVIAL)]}
        )
        http_tool = await http.post(f"/v1/agents/{AGENT}/tools", json={"tools": [HTTP_TOOL]})

    assert posted.status_code == 503
    error = posted.json()["error"]
    assert error["code"] == "sandbox_unavailable"
    assert error["message"].startswith("Python tools cannot run here: the sandbox did not start")
    assert http_tool.status_code == 201, http_tool.text


async def test_where_the_sandbox_cannot_start_a_python_call_fails_and_nothing_runs(
    fabric: Fabric,
) -> None:
    await fabric.register(AGENT, python_tool(TRIVIAL))
    [running] = [s for s in fabric.services if isinstance(s, CodeExecutorService)]
    await running.stop()
    broken = CodeExecutorService(fabric.settings.model_copy(update={"nsjail": "/bin/false"}))
    await broken.start()
    fabric.services[fabric.services.index(running)] = broken

    _, _, last = await call_tool(fabric, "tool", {})

    assert last["error"]["code"] == "internal"
    assert last["error"]["details"]["kind"] == "sandbox"
    assert last["error"]["details"]["reason"].startswith("the sandbox did not start")


FORECAST = {
    "location": {"name": "Pune"},
    "forecast": {
        "forecastday": [
            {"date": "2026-12-05", "day": {"condition": {"text": "Sunny"}, "maxtemp_c": 31.2}},
            {"date": "2026-12-06", "day": {"condition": {"text": "Cloudy"}, "maxtemp_c": 29.0}},
        ]
    },
}


async def test_the_seeds_get_weather_runs_end_to_end(fabric: Fabric, api: RecordingApi) -> None:
    """CallKaro's own example, registered as its page writes it (its API's host is ours)."""
    api.reply("GET", "/v1/forecast.json", json=FORECAST)
    code = example("callkaro_get_weather.py", **{"https://api.weatherapi.com": api.url})
    document = json.dumps({"mode": "advanced", "code": code})
    [tool] = await fabric.register_document(AGENT, "callkaro", document)

    call, first, last = await call_tool(fabric, "get_weather", {"location": "Pune", "days": 2})

    assert tool["kind"] == "python"
    assert first == pending(call, speech=None, speak=False)
    assert last == success(
        call,
        {
            "status": "success",
            "location": "Pune",
            "forecast": [
                {"date": "2026-12-05", "condition": "Sunny", "max_temp": 31.2},
                {"date": "2026-12-06", "condition": "Cloudy", "max_temp": 29.0},
            ],
        },
    )
    [received] = api.received
    assert (received.method, received.path) == ("GET", "/v1/forecast.json")
    assert received.query == [("key", "YOUR_API_KEY"), ("q", "Pune"), ("days", "2")]
    assert received.header("traceparent") is not None


async def test_the_seeds_get_weather_says_its_own_error(fabric: Fabric, api: RecordingApi) -> None:
    api.reply("GET", "/v1/forecast.json", json=FORECAST)
    code = example("callkaro_get_weather.py", **{"https://api.weatherapi.com": api.url})
    await fabric.register_document(
        AGENT, "callkaro", json.dumps({"mode": "advanced", "code": code})
    )

    call, _, last = await call_tool(fabric, "get_weather", {"location": "Pune", "days": 9})

    assert last == error_result(
        call,
        "tool_error",
        "Days must be between 1 and 7",
        {"body": {"status": "error", "message": "Days must be between 1 and 7"}},
        http_status=200,
        attempts=1,
    )
    assert api.received == []
