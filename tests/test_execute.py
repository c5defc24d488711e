"""Running a work item: retries by the tool's policy, always within the call's deadline."""

from datetime import timedelta

import httpx

from services.http_executor.client import Sender
from services.http_executor.destinations import DestinationPolicy
from services.http_executor.execute import Executor
from shared.events import utcnow
from tests.factories import work_item

URL = "https://api.example.com/book"


def executor(*statuses: int) -> tuple[Executor, list[httpx.Request]]:
    seen: list[httpx.Request] = []
    answers = iter(statuses)

    def api(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(next(answers), json={})

    sender = Sender(httpx.AsyncClient(transport=httpx.MockTransport(api)), 1024)
    return Executor(sender, DestinationPolicy("api.example.com"), {}), seen


async def test_5xx_is_retried_when_the_policy_says_so() -> None:
    run, seen = executor(503, 502, 200)
    work = work_item({"url": URL, "retry": {"attempts": 3, "on": ["http_5xx"], "backoff_s": 0.001}})

    outcome = await run.run(work)

    assert (outcome.attempts, len(seen)) == (3, 3)
    assert outcome.response is not None
    assert outcome.response.status == 200


async def test_without_a_policy_nothing_is_retried() -> None:
    run, seen = executor(503, 200)

    outcome = await run.run(work_item({"url": URL}))

    assert (outcome.attempts, len(seen)) == (1, 1)
    assert outcome.response is not None
    assert outcome.response.status == 503


async def test_no_retry_is_started_that_the_deadline_cannot_hold() -> None:
    run, seen = executor(503, 200)
    work = work_item({"url": URL, "retry": {"attempts": 3, "on": ["http_5xx"], "backoff_s": 5}})
    work.deadline_at = utcnow() + timedelta(seconds=1)

    outcome = await run.run(work)

    assert (outcome.attempts, len(seen)) == (1, 1)


async def test_every_attempt_carries_the_same_idempotency_key() -> None:
    run, seen = executor(503, 200)
    work = work_item({"url": URL, "retry": {"attempts": 2, "on": ["http_5xx"], "backoff_s": 0.001}})

    await run.run(work)

    assert [r.headers["idempotency-key"] for r in seen] == ["call-1", "call-1"]
