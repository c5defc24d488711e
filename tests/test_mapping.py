"""Mapping an HTTP outcome to what the conversation hears."""

import pytest

from services.result_injector.mapping import map_outcome
from shared.events import ErrorInfo, ExecutionOutcome, HttpResponse
from tests.factories import work_item

TOOL = {"url": "https://api.example.com/book"}


def outcome(status: int = 200, body: str = "", **tool: object) -> ExecutionOutcome:
    return ExecutionOutcome(
        request=work_item(TOOL, **tool),
        attempts=1,
        duration_ms=5.0,
        response=HttpResponse(status=status, body=body),
    )


def test_variables_take_the_first_match_and_unmatched_ones_stay_unset() -> None:
    mapped = map_outcome(
        outcome(
            body='{"slots": [{"t": "10:00"}, {"t": "11:00"}]}',
            response={
                "variables": {"first": "$.slots[*].t", "all": "$.slots", "absent": "$.nothing"}
            },
        )
    )

    assert mapped.variables == {"first": "10:00", "all": [{"t": "10:00"}, {"t": "11:00"}]}


def test_an_agent_message_is_taken_only_when_it_is_a_string() -> None:
    assert map_outcome(outcome(body='{"agent_message": "Done."}')).agent_message == "Done."
    assert map_outcome(outcome(body='{"agent_message": 3}')).agent_message is None
    assert map_outcome(outcome(body='["agent_message"]')).agent_message is None


def test_an_empty_success_body_is_a_success_without_result() -> None:
    mapped = map_outcome(outcome(status=204))

    assert (mapped.status, mapped.result, mapped.http_status) == ("success", None, 204)


def test_speak_follows_the_tools_on_receive() -> None:
    mapped = map_outcome(outcome(body="{}", speech={"on_receive": False}))

    assert mapped.speak is False


@pytest.mark.parametrize(
    ("status", "advice"),
    [
        (
            401,
            "refused our credentials. Tell the caller there is a technical problem on our side "
            "and it cannot be done right now.",
        ),
        (
            403,
            "refused our credentials. Tell the caller there is a technical problem on our side "
            "and it cannot be done right now.",
        ),
        (
            422,
            "could not accept the request. Ask the caller to check the details they gave, then "
            "try again.",
        ),
        (500, "had a problem. Tell the caller to try again in a few minutes."),
        (302, "had a problem. Tell the caller to try again in a few minutes."),
    ],
)
def test_http_errors_say_what_to_tell_the_caller(status: int, advice: str) -> None:
    mapped = map_outcome(outcome(status=status, body="plain words"))

    assert mapped.status == "error"
    assert mapped.error is not None
    assert mapped.error.code == "http_error"
    assert mapped.error.message == f"The T service {advice} (HTTP {status})"
    assert mapped.error.details == {"status": status, "body": "plain words"}


def test_a_truncated_body_is_an_invalid_response() -> None:
    work = outcome()
    assert work.response is not None
    work.response.truncated = True

    mapped = map_outcome(work)

    assert mapped.error is not None
    assert (mapped.error.code, mapped.error.message) == (
        "invalid_response",
        "The T service sent an answer too large to use. Tell the caller there is a technical "
        "problem.",
    )


def test_a_transport_failure_passes_through_with_its_attempts() -> None:
    failed = ExecutionOutcome(
        request=work_item(TOOL),
        attempts=3,
        duration_ms=9.0,
        failure=ErrorInfo(code="timeout", message="slow"),
    )

    mapped = map_outcome(failed, trace_id="ab" * 16)

    assert mapped.model_dump(
        include={"status", "error", "attempts", "http_status", "trace_id"}
    ) == {
        "status": "error",
        "error": {"code": "timeout", "message": "slow", "details": None},
        "attempts": 3,
        "http_status": None,
        "trace_id": "ab" * 16,
    }
