"""Long-running tools: an API answers 202 Accepted, reports progress, then completes.

Every request carries ``Midcall-Callback-Token`` and ``Midcall-Callback-Url``;
the API posts ``{url}/progress`` and ``{url}/complete`` with the token alone.
Progress reaches the conversation's runtimes as it comes; the completion is
mapped as the answer would have been, once; a missing, forged, another
call's or reused token is refused; the deadline still bounds the call.
"""

import asyncio
import base64
import json
from typing import Any

import httpx
import pytest

from services.http_executor.main import HttpExecutorService
from tests.support.api import Received, RecordingApi
from tests.support.fabric import SECRETS, Fabric
from tests.test_spine import AGENT, booking_tool, events_of, new_call, pending

TOKEN = "Midcall-Callback-Token"


def long_running(
    api: RecordingApi, callback_timeout_s: float = 30.0, **request: Any
) -> dict[str, Any]:
    """SearchFlights: its API accepts the search (202) and completes it later."""
    tool = {**booking_tool(api.url, **request), "name": "SearchFlights"}
    tool["request"] |= {"callback_timeout_s": callback_timeout_s}
    tool["response"] = {"variables": {"flight": "$.flight"}}
    return tool


async def accepted_call(
    fabric: Fabric, api: RecordingApi, **tool: Any
) -> tuple[dict[str, Any], Received]:
    """A call of SearchFlights whose API answered 202; what the API received."""
    api.reply("POST", "/book", status=202, json={"queued": True})
    await fabric.register(AGENT, long_running(api, **tool))
    call = new_call(tool="SearchFlights")
    await fabric.runtime.listen(call["conversation_id"])
    await fabric.runtime.call(call)
    received = await api.wait_for(1)
    return call, received[0]


async def report(received: Received, kind: str, **request: Any) -> httpx.Response:
    """What the API does: post to the URL it was given, with the token it was given."""
    url = received.header("Midcall-Callback-Url")
    token = received.header(TOKEN)
    assert url is not None
    assert token is not None
    headers = {TOKEN: token} | request.pop("headers", {})
    async with httpx.AsyncClient() as client:  # no account key: the token alone
        return await client.post(f"{url}/{kind}", headers=headers, **request)


async def test_an_accepted_call_reports_progress_then_completes_once(
    fabric: Fabric, api: RecordingApi
) -> None:
    call, received = await accepted_call(fabric, api)
    registry = str(fabric.registry.base_url).rstrip("/")
    assert received.header("Midcall-Callback-Url") == f"{registry}/v1/calls/{call['call_id']}"

    progressed = await report(
        received,
        "progress",
        json={"message": "Still searching flights.", "speak": True, "percent": 40},
    )
    assert (progressed.status_code, progressed.json()) == (
        202,
        {"call_id": call["call_id"], "accepted": True},
    )
    await fabric.runtime.wait_for(call["conversation_id"], "progress", call["call_id"])
    completed = await report(received, "complete", json={"flight": "LH 441", "seats": 3})
    assert completed.status_code == 200, completed.text
    result = await fabric.runtime.wait_for(call["conversation_id"], "result", call["call_id"])
    await fabric.drained()
    again = await report(received, "complete", json={"flight": "other"})

    events = events_of(fabric, call)
    assert [e["_kind"] for e in events] == ["pending", "progress", "result"]
    assert events[:2] == [
        pending(call, speech="One moment while I book that."),
        {
            "call_id": call["call_id"],
            "conversation_id": call["conversation_id"],
            "message": "Still searching flights.",
            "speak": True,
            "percent": 40.0,
            "_kind": "progress",
        },
    ]
    assert (result["status"], result["result"], result["variables"], result["http_status"]) == (
        "success",
        {"flight": "LH 441", "seats": 3},
        {"flight": "LH 441"},
        200,
    )
    assert (again.status_code, again.json()["error"]["code"]) == (409, "call_answered")
    assert len(api.received) == 1  # the API was called once, and only reported back


async def test_two_completions_at_once_make_one_result(fabric: Fabric, api: RecordingApi) -> None:
    call, received = await accepted_call(fabric, api)

    first, second = await asyncio.gather(
        report(received, "complete", json={"flight": "A 1"}),
        report(received, "complete", json={"flight": "B 2"}),
    )
    result = await fabric.runtime.wait_for(call["conversation_id"], "result", call["call_id"])
    await fabric.drained()

    codes = sorted([first.status_code, second.status_code])
    assert codes == [200, 409]
    refused = first if first.status_code == 409 else second
    winner = first if first.status_code == 200 else second
    assert refused.json()["error"]["code"] in ("callback_token_used", "call_answered")
    sent = {id(first): {"flight": "A 1"}, id(second): {"flight": "B 2"}}
    assert result["result"] == sent[id(winner)]
    assert [e["_kind"] for e in events_of(fabric, call)] == ["pending", "result"]


async def test_tokens_that_are_missing_forged_or_another_calls_are_refused(
    fabric: Fabric, api: RecordingApi
) -> None:
    call, received = await accepted_call(fabric, api)
    other = new_call(tool="SearchFlights", conversation_id=call["conversation_id"])
    await fabric.runtime.call(other)
    other_received = (await api.wait_for(2))[1]
    token = received.header(TOKEN)
    assert token is not None
    version, payload, mac = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    forged_claims = (
        base64.urlsafe_b64encode(json.dumps({**claims, "call_id": other["call_id"]}).encode())
        .decode()
        .rstrip("=")
    )
    body = {"json": {"message": "Working on it."}}

    missing = await report(received, "progress", headers={TOKEN: ""}, **body)
    forged = await report(
        received, "progress", headers={TOKEN: f"{version}.{payload}.{mac[:-2]}AA"}, **body
    )
    rewritten = await report(
        other_received, "complete", headers={TOKEN: f"{version}.{forged_claims}.{mac}"}, json={}
    )
    others = await report(other_received, "complete", headers={TOKEN: token}, json={})
    garbage = await report(received, "progress", headers={TOKEN: "not a token"}, **body)

    def refusal(response: httpx.Response) -> tuple[int, str, str]:
        error = response.json()["error"]
        return response.status_code, error["code"], error["message"]

    assert refusal(missing) == (
        401,
        "invalid_callback_token",
        "The Midcall-Callback-Token header is missing: send the one Midcall sent with the "
        "call's request.",
    )
    not_ours = (
        403,
        "invalid_callback_token",
        "The Midcall-Callback-Token is not one Midcall issued.",
    )
    assert refusal(forged) == not_ours
    assert refusal(rewritten) == not_ours
    assert refusal(garbage) == not_ours
    assert refusal(others) == (
        403,
        "invalid_callback_token",
        f"The Midcall-Callback-Token is another call's, not {other['call_id']}'s.",
    )
    # Nothing reached the runtimes, and both calls still wait for their completion.
    assert [e["_kind"] for e in events_of(fabric, call)] == ["pending"]
    assert [e["_kind"] for e in events_of(fabric, other)] == ["pending"]


async def test_the_deadline_bounds_a_call_that_never_completes(
    fabric: Fabric, api: RecordingApi
) -> None:
    call, received = await accepted_call(fabric, api, callback_timeout_s=1.5, timeout_s=1.0)

    result = await fabric.runtime.wait_for(call["conversation_id"], "result", call["call_id"])
    await fabric.drained()
    late = await report(received, "complete", json={"flight": "LH 441"})

    assert result["status"] == "error"
    assert result["error"]["code"] == "timeout"
    assert (late.status_code, late.json()["error"]["code"]) == (409, "call_answered")
    assert [e["_kind"] for e in events_of(fabric, call)] == ["pending", "result"]


async def test_a_tool_that_does_not_wait_takes_a_202_as_its_answer(
    fabric: Fabric, api: RecordingApi
) -> None:
    api.reply("POST", "/book", status=202, json={"queued": True})
    await fabric.register(AGENT, booking_tool(api.url))
    call = new_call()
    await fabric.runtime.listen(call["conversation_id"])
    await fabric.runtime.call(call)

    result = await fabric.runtime.wait_for(call["conversation_id"], "result", call["call_id"])

    assert (result["status"], result["result"], result["http_status"]) == (
        "success",
        {"queued": True},
        202,
    )
    # Its request carried a token all the same: the API may still report progress.
    assert api.received[0].header(TOKEN)


@pytest.mark.parametrize("field", ["message", "percent"])
async def test_a_malformed_progress_report_is_a_422(
    fabric: Fabric, api: RecordingApi, field: str
) -> None:
    _call, received = await accepted_call(fabric, api)
    bad = {"message": "", "percent": 140}[field]

    response = await report(received, "progress", json={"message": "ok", field: bad})

    assert response.status_code == 422
    assert field in response.json()["error"]["message"]


@pytest.mark.parametrize("completed", ["while no executor ran", "after another took over"])
async def test_a_waiting_call_survives_its_executors_restart_without_a_second_request(
    fabric: Fabric, api: RecordingApi, completed: str
) -> None:
    call, received = await accepted_call(fabric, api)
    index = next(i for i, s in enumerate(fabric.services) if isinstance(s, HttpExecutorService))
    await fabric.services[index].stop()  # hands the waiting call back to JetStream at once
    if completed == "while no executor ran":
        assert (await report(received, "complete", json={"flight": "LH 441"})).status_code == 200
    replacement = HttpExecutorService(fabric.settings, secrets=SECRETS)
    fabric.services[index] = replacement
    await replacement.start()
    if completed == "after another took over":
        await until_waiting(replacement)
        assert (await report(received, "complete", json={"flight": "LH 441"})).status_code == 200

    result = await fabric.runtime.wait_for(call["conversation_id"], "result", call["call_id"])
    await fabric.drained()

    assert (result["status"], result["result"]) == ("success", {"flight": "LH 441"})
    assert [e["_kind"] for e in events_of(fabric, call)] == ["pending", "result"]
    assert len(api.received) == 1


async def until_waiting(executor: HttpExecutorService) -> None:
    """Until the executor holds a call waiting for its completion."""
    async with asyncio.timeout(10):
        while True:
            if executor.completions.waiting:
                return
            await asyncio.sleep(0.01)
