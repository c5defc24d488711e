"""Failed calls for ops: kept with what it takes to run them again, listed, shown, replayed.

The whole fabric runs in-process on a real nats-server; ``midcall failed``
and ``midcall replay`` run as an operator runs them, against the registry's
REST API.
"""

import asyncio
import base64
import json
from typing import Any

import pytest

from services.cli import main
from tests.support.api import RecordingApi
from tests.support.fabric import Fabric
from tests.support.keys import ADMIN_KEY
from tests.test_spine import AGENT, booking_tool, events_of, new_call, place

RETRY_5XX = {"attempts": 2, "on": ["http_5xx"], "backoff_s": 0.01, "non_idempotent": True}


async def kept(fabric: Fabric, timeout_s: float = 10.0, **params: Any) -> list[dict[str, Any]]:
    """The failed calls matching ``params`` once the registry has stored any."""
    async with asyncio.timeout(timeout_s):
        while True:
            response = await fabric.registry.get("/v1/failed", params=params)
            assert response.status_code == 200, response.text
            if rows := response.json()["failed"]:
                return list(rows)
            await asyncio.sleep(0.02)


async def detail(fabric: Fabric, failure_id: int) -> dict[str, Any]:
    response = await fabric.registry.get(f"/v1/failed/{failure_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # tables are not folded to fit 80 columns


async def midcall(
    fabric: Fabric, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str]:
    """Run the ``midcall`` command as an operator would; its exit code and what it printed."""
    registry = str(fabric.registry.base_url).rstrip("/")
    capsys.readouterr()
    # In a thread: the fabric it talks to serves on this event loop.
    code = await asyncio.to_thread(main, [*args, "--registry", registry, "--key", ADMIN_KEY])
    return code, capsys.readouterr().out


async def test_a_failed_call_is_kept_with_the_call_the_tool_and_every_attempt(
    fabric: Fabric, api: RecordingApi
) -> None:
    api.reply("POST", "/book", status=503, json={"error": "down for maintenance"})
    await fabric.register(AGENT, booking_tool(api.url, retry=RETRY_5XX))
    call = new_call()

    result = await place(fabric, call)

    assert result["error"]["code"] == "http_error"
    [row] = await kept(fabric, call_id=call["call_id"])
    assert {k: row[k] for k in ("kind", "state", "code", "http_status", "tool", "agent_id")} == {
        "kind": "call",
        "state": "failed",
        "code": "http_error",
        "http_status": 503,
        "tool": "BookAppointment",
        "agent_id": AGENT,
    }
    assert (row["account_id"], row["trace_id"]) == ("default", result["trace_id"])
    assert (row["conversation_id"], row["replays"], row["last_attempt"]) == (
        call["conversation_id"],
        0,
        1,
    )
    shown = await detail(fabric, row["id"])
    # The call as run: its account is its agent's, whatever it named.
    assert shown["call"] == {**call, "account_id": "default", "deadline_ms": None}
    assert shown["tool_definition"]["request"]["url"] == f"{api.url}/book"
    [run] = shown["runs"]
    assert (run["attempt"], run["replay"], run["status"], run["http_status"]) == (
        1,
        False,
        "error",
        503,
    )
    assert run["error"]["message"] == result["error"]["message"]
    assert [(a["number"], a["http_status"], a["error"]) for a in run["http_attempts"]] == [
        (1, 503, None),
        (2, 503, None),
    ]


async def test_a_callers_mistake_is_not_kept_but_a_dead_letter_is(
    fabric: Fabric, api: RecordingApi
) -> None:
    await fabric.register(AGENT, booking_tool(api.url))
    wrong = new_call(arguments={"date": "tomorrow"})
    assert (await place(fabric, wrong))["error"]["code"] == "invalid_arguments"
    unreadable = b"{not json"
    await fabric.nc.jetstream().publish("midcall.calls.conv-garbled", unreadable)

    [letter] = await kept(fabric, code="dead_letter")

    assert (letter["kind"], letter["state"], letter["conversation_id"]) == (
        "dead_letter",
        "failed",
        "conv-garbled",
    )
    kept_letter = (await detail(fabric, letter["id"]))["dead_letter"]
    assert (kept_letter["stage"], kept_letter["subject"]) == ("calls", "midcall.calls.conv-garbled")
    assert base64.b64decode(kept_letter["body_base64"]) == unreadable
    assert kept_letter["reason"] == (
        "The tool call could not be read: invalid ToolCall: body: Invalid JSON: "
        "key must be a string at line 1 column 2."
    )
    everything = (await fabric.registry.get("/v1/failed")).json()["failed"]
    assert [row["kind"] for row in everything] == ["dead_letter"]


async def test_ops_list_show_dry_run_and_replay_a_call_after_its_tool_was_fixed(
    fabric: Fabric, api: RecordingApi, capsys: pytest.CaptureFixture[str]
) -> None:
    # The tool points at a path the API does not have: every call fails with a 404.
    await fabric.register(AGENT, booking_tool(api.url, url=f"{api.url}/v0/book"))
    call = new_call(call_id="c-fix-1")
    first = await place(fabric, call)
    assert (first["error"]["code"], first["http_status"]) == ("http_error", 404)
    [row] = await kept(fabric, call_id="c-fix-1")

    code, listed = await midcall(fabric, capsys, "failed", "--code", "http_error", "--json")
    assert code == 0
    assert [(r["id"], r["call_id"], r["code"]) for r in json.loads(listed)] == [
        (row["id"], "c-fix-1", "http_error")
    ]
    code, table = await midcall(fabric, capsys, "failed", "--tool", "BookAppointment")
    assert code == 0
    assert "c-fix-1" in table
    assert "http_error 404" in table
    code, shown = await midcall(fabric, capsys, "failed", "show", "c-fix-1")
    assert code == 0
    assert "runs and their HTTP attempts" in shown
    assert "#1 404" in shown

    # Fixed: the tool now points at the right path, which answers.
    api.reply("POST", "/book", json={"success": True, "stylist_name": "Ana"})
    await fabric.register(AGENT, booking_tool(api.url))
    sent_before = len(api.received)

    code, plan = await midcall(fabric, capsys, "replay", "c-fix-1", "--dry-run", "--json")

    assert code == 0
    [item] = json.loads(plan)["items"]
    assert (item["status"], item["attempt"]) == ("planned", None)
    assert item["request"] == {
        "method": "POST",
        "url": f"{api.url}/book?source=voice&conv={call['conversation_id']}",
        "headers": {
            "Accept": "application/json",
            "User-Agent": "midcall/0.1",
            "Idempotency-Key": "c-fix-1",
            "Content-Type": "application/json",
            "Authorization": "Bearer ***",
        },
        "body": json.dumps(
            {
                "date": "2024-04-20",
                "time": "10:00 AM",
                "service": "Haircut",
                "phone": "+12223334444",
                "note": "call c-fix-1 for Haircut",
            },
            separators=(",", ":"),
        ),
    }
    assert len(api.received) == sent_before  # a dry run sends nothing

    code, summary = await midcall(fabric, capsys, "replay", "c-fix-1")

    assert code == 0, summary
    assert summary.strip() == "Replayed 1: 1 succeeded."
    replayed = [e for e in events_of(fabric, call) if e["_kind"] == "result"][1]
    assert (replayed["status"], replayed["replay"], replayed["replay_attempt"]) == (
        "success",
        True,
        2,
    )
    [request] = [r for r in api.received[sent_before:] if r.path == "/book"]
    assert request.header("Idempotency-Key") == api.received[0].header("Idempotency-Key")
    assert request.header("Authorization") == "Bearer s3cr3t-booking-key"
    fixed = await detail(fabric, row["id"])
    assert (fixed["state"], fixed["replays"], fixed["last_attempt"], fixed["code"]) == (
        "replayed",
        1,
        2,
        "success",
    )
    assert [(run["attempt"], run["status"]) for run in fixed["runs"]] == [
        (1, "error"),
        (2, "success"),
    ]
    await fabric.drained()
    usage = (await fabric.billing.get(f"/v1/usage/conversations/{call['conversation_id']}")).json()
    assert [(c["status"], c["replay"], c["replay_attempt"]) for c in usage["calls"]] == [
        ("error", False, None),
        ("success", True, 2),
    ]
    assert {k: usage["totals"][k] for k in ("calls", "errors", "replays")} == {
        "calls": 2,
        "errors": 1,
        "replays": 1,
    }


async def test_a_replay_as_called_runs_the_tool_as_it_was_and_reports_failing_again(
    fabric: Fabric, api: RecordingApi, capsys: pytest.CaptureFixture[str]
) -> None:
    await fabric.register(AGENT, booking_tool(api.url, url=f"{api.url}/v0/book"))
    call = new_call(call_id="c-as-called")
    await place(fabric, call)
    [row] = await kept(fabric, call_id="c-as-called")
    api.reply("POST", "/book", json={"success": True})
    await fabric.register(AGENT, booking_tool(api.url))

    code, summary = await midcall(fabric, capsys, "replay", "c-as-called", "--as-called")

    assert code == 1
    assert summary.strip() == "Replayed 1: 0 succeeded, 1 failed again (http_error)."
    assert api.received[-1].path == "/v0/book"
    again = await detail(fabric, row["id"])
    assert (again["state"], again["last_attempt"]) == ("failed", 2)
    assert [(run["attempt"], run["replay"], run["http_status"]) for run in again["runs"]] == [
        (1, False, 404),
        (2, True, 404),
    ]


async def test_replay_over_rest_selects_by_filter_and_refuses_an_empty_selection(
    fabric: Fabric, api: RecordingApi
) -> None:
    await fabric.register(AGENT, booking_tool(api.url, url=f"{api.url}/v0/book"))
    calls = [new_call(), new_call()]
    for call in calls:
        await place(fabric, call)
    for call in calls:
        await kept(fabric, call_id=call["call_id"])

    planned = await fabric.registry.post(
        "/v1/failed/replay", json={"tool": "BookAppointment", "code": "http_error", "dry_run": True}
    )
    everything = await fabric.registry.post("/v1/failed/replay", json={})

    assert planned.status_code == 200, planned.text
    report = planned.json()
    assert (report["dry_run"], report["queued"], report["skipped"]) == (True, 0, 0)
    assert [item["call_id"] for item in report["items"]] == [c["call_id"] for c in calls]
    assert everything.status_code == 422
    assert "name the failed calls" in everything.json()["error"]["message"]
