"""Running a work item: retries by the tool's policy, always within the call's deadline."""

from datetime import timedelta

from services.http_executor.execute import Executor
from shared.calls.client import Sender
from shared.calls.render import RenderedRequest
from shared.contract.events import HttpResponse, utcnow
from shared.security.destinations import DestinationPolicy
from tests.factories import work_item

URL = "https://api.example.com/book"


class ScriptedApi(Sender):
    """A sender that answers from a script and keeps what it was asked to send."""

    def __init__(self, statuses: tuple[int, ...]) -> None:
        super().__init__(1, DestinationPolicy(), 1024)
        self.answers = iter(statuses)
        self.seen: list[RenderedRequest] = []

    async def send(self, request: RenderedRequest, timeout_s: float) -> HttpResponse:
        self.seen.append(request)
        return HttpResponse(status=next(self.answers), body="{}")


def executor(*statuses: int) -> tuple[Executor, list[RenderedRequest]]:
    api = ScriptedApi(statuses)
    return Executor(api, DestinationPolicy("api.example.com"), {}), api.seen


async def test_5xx_is_retried_when_the_policy_says_so() -> None:
    run, seen = executor(503, 502, 200)
    retry = {"attempts": 3, "on": ["http_5xx"], "backoff_s": 0.001}
    work = work_item({"url": URL, "method": "GET", "retry": retry})

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
    retry = {"attempts": 3, "on": ["http_5xx"], "backoff_s": 5}
    work = work_item({"url": URL, "method": "GET", "retry": retry})
    work.deadline_at = utcnow() + timedelta(seconds=1)

    outcome = await run.run(work)

    assert (outcome.attempts, len(seen)) == (1, 1)


async def test_every_attempt_carries_the_same_idempotency_key() -> None:
    run, seen = executor(503, 200)
    retry = {"attempts": 2, "on": ["http_5xx"], "backoff_s": 0.001}
    work = work_item({"url": URL, "method": "PUT", "retry": retry})

    await run.run(work)

    assert [r.headers["Idempotency-Key"] for r in seen] == ["call-1", "call-1"]
