"""Retries against an API on loopback that fails in scripted ways, and the per-host breaker."""

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web

from services.http_executor.breaker import Breakers
from services.http_executor.execute import Executor
from services.http_executor.retries import Attempt, retry_after_s, retry_delay
from shared.calls.client import Sender
from shared.contract.events import ExecutionOutcome, utcnow
from shared.contract.tools import RetryPolicy
from shared.security.destinations import DestinationPolicy
from tests.factories import work_item
from tests.support.api import RecordingApi

RETRY_ALL = {"attempts": 3, "on": ["http_5xx", "http_429", "connection_error"], "backoff_s": 0.01}


def scripted(api: RecordingApi, path: str, *answers: Any) -> None:
    """Each request gets the next answer: a status, (status, headers), "reset" or "hang"."""
    script = iter(answers)
    never = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        answer = next(script)
        if answer == "reset":
            assert request.transport is not None
            request.transport.close()  # the connection drops mid-request
            return web.Response()
        if answer == "hang":
            await never.wait()
        status, headers = answer if isinstance(answer, tuple) else (answer, {})
        return web.json_response({"ok": status < 400}, status=status, headers=headers)

    api.route("GET", path, handler)
    api.route("POST", path, handler)


async def run(
    api: RecordingApi, request: dict[str, Any], deadline_s: float = 10
) -> ExecutionOutcome:
    sender = Sender(8, DestinationPolicy("127.0.0.1"), 1024)
    work = work_item({"method": "GET", "retry": RETRY_ALL, **request})
    work.deadline_at = utcnow() + timedelta(seconds=deadline_s)
    try:
        return await Executor(sender, DestinationPolicy("127.0.0.1"), {}).run(work)
    finally:
        await sender.close()


async def test_503_twice_then_200_succeeds_on_the_third_attempt(api: RecordingApi) -> None:
    scripted(api, "/slots", 503, 503, 200)

    outcome = await run(api, {"url": f"{api.url}/slots"})

    assert outcome.response is not None
    assert (outcome.response.status, outcome.attempts, len(api.received)) == (200, 3, 3)


async def test_a_post_that_reached_the_api_is_not_sent_twice(api: RecordingApi) -> None:
    scripted(api, "/book", 503, 200)

    outcome = await run(api, {"url": f"{api.url}/book", "method": "POST"})

    assert outcome.response is not None
    assert (outcome.response.status, outcome.attempts, len(api.received)) == (503, 1, 1)


async def test_a_post_is_sent_again_when_the_tool_opts_in(api: RecordingApi) -> None:
    scripted(api, "/book", 503, 200)
    retry = {**RETRY_ALL, "non_idempotent": True}

    outcome = await run(api, {"url": f"{api.url}/book", "method": "POST", "retry": retry})

    assert outcome.response is not None
    assert (outcome.response.status, outcome.attempts) == (200, 2)


async def test_429_waits_as_long_as_retry_after_says(api: RecordingApi) -> None:
    scripted(api, "/slots", (429, {"Retry-After": "1"}), 200)
    started = utcnow()

    outcome = await run(api, {"url": f"{api.url}/slots"})

    assert outcome.response is not None
    assert (outcome.response.status, outcome.attempts) == (200, 2)
    assert utcnow() - started >= timedelta(seconds=1)


async def test_a_retry_after_past_the_deadline_is_not_waited_for(api: RecordingApi) -> None:
    scripted(api, "/slots", (429, {"Retry-After": "30"}), 200)

    outcome = await run(api, {"url": f"{api.url}/slots"}, deadline_s=5)

    assert outcome.response is not None
    assert (outcome.response.status, outcome.attempts, len(api.received)) == (429, 1, 1)


async def test_an_api_that_hangs_past_the_deadline_ends_as_a_timeout(api: RecordingApi) -> None:
    scripted(api, "/slots", "hang", "hang")

    outcome = await run(api, {"url": f"{api.url}/slots"}, deadline_s=0.5)

    assert outcome.failure is not None
    assert (outcome.failure.code, outcome.attempts) == ("timeout", 1)


async def test_a_reset_connection_is_tried_again_for_a_get(api: RecordingApi) -> None:
    scripted(api, "/slots", "reset", 200)

    outcome = await run(api, {"url": f"{api.url}/slots"})

    assert outcome.response is not None
    assert (outcome.response.status, len(api.received)) == (200, 2)


async def test_a_reset_connection_is_not_tried_again_for_a_post(api: RecordingApi) -> None:
    scripted(api, "/book", "reset", 200)

    outcome = await run(api, {"url": f"{api.url}/book", "method": "POST"})

    assert outcome.failure is not None
    assert (outcome.failure.code, outcome.attempts, len(api.received)) == (
        "connection_error",
        1,
        1,
    )


async def test_a_refused_post_is_sent_again_as_it_never_left() -> None:
    work_url = "http://127.0.0.1:9/book"  # discard port: nothing listens, the connect is refused

    outcome = await run(RecordingApi(), {"url": work_url, "method": "POST"}, deadline_s=5)

    assert outcome.failure is not None
    assert (outcome.failure.code, outcome.attempts) == ("connection_error", 3)


async def test_a_failing_host_gets_a_rest_then_one_probe(api: RecordingApi) -> None:
    scripted(api, "/slots", 503, 503, 200, 200)
    clock = [0.0]
    breakers = Breakers(threshold=2, cool_down_s=10, clock=lambda: clock[0])
    sender = Sender(8, DestinationPolicy("127.0.0.1"), 1024)
    executor = Executor(sender, DestinationPolicy("127.0.0.1"), {}, breakers)
    work = work_item({"url": f"{api.url}/slots", "method": "GET"})  # no retries

    failing = [await executor.run(work) for _ in range(2)]
    resting = await executor.run(work)
    clock[0] = 10.0
    probe = await executor.run(work)
    closed = await executor.run(work)  # the probe's success closed the circuit
    await sender.close()

    assert [o.response.status for o in failing if o.response] == [503, 503]
    assert resting.failure is not None
    assert (resting.failure.code, resting.attempts) == ("connection_error", 0)
    assert "not tried" in resting.failure.message
    assert probe.response is not None
    assert probe.response.status == 200
    assert closed.response is not None
    assert len(api.received) == 4


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)

    assert retry_after_s("7", now) == 7.0
    assert retry_after_s("Sun, 29 Nov 2026 12:00:30 GMT", now) == 30.0
    assert retry_after_s("soon", now) is None
    assert retry_after_s(None, now) is None


def test_no_attempt_is_started_that_cannot_finish_before_the_deadline() -> None:
    policy = RetryPolicy(attempts=3, on=["timeout"], backoff_s=0.1)
    slow = Attempt(number=1, reason="timeout", sent=True, took_s=2.0)

    assert retry_delay(policy, "GET", slow, remaining_s=2.05, jitter=1.0) is None
    assert retry_delay(policy, "GET", slow, remaining_s=2.2, jitter=1.0) == pytest.approx(0.1)
