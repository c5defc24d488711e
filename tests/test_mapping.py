"""Mapping an HTTP outcome to what the conversation hears."""

from typing import Any

import pytest

from shared.calls.mapping import map_outcome
from shared.contract.events import ErrorInfo, ExecutionOutcome, HttpResponse
from tests.factories import work_item

TOOL = {"url": "https://api.example.com/book"}


def outcome(status: int = 200, body: str = "", **tool: Any) -> ExecutionOutcome:
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


VOCODE_RESPONSE = {"result_path": "$.result", "result_required": True, "result_type": "object"}


def test_a_result_path_picks_the_result_out_of_an_envelope() -> None:
    mapped = map_outcome(
        outcome(
            body='{"result": {"ok": true}, "agent_message": "Booked."}', response=VOCODE_RESPONSE
        )
    )

    assert (mapped.status, mapped.result, mapped.agent_message) == (
        "success",
        {"ok": True},
        "Booked.",
    )


@pytest.mark.parametrize(
    "body",
    ['{"agent_message": "hi"}', '{"result": [1]}', '{"result": {}, "agent_message": 7}', "[]"],
)
def test_a_required_envelope_that_does_not_fit_is_an_invalid_response(body: str) -> None:
    mapped = map_outcome(outcome(body=body, response=VOCODE_RESPONSE))

    assert mapped.error is not None
    assert mapped.error.code == "invalid_response"


CALLKARO_RESPONSE = {
    "result_path": "$.data",
    "tool_error": {"path": "$.status", "equals": "error", "message_path": "$.message"},
}


def test_a_body_that_says_the_action_failed_is_a_tool_error_with_its_message() -> None:
    mapped = map_outcome(
        outcome(
            body='{"status": "error", "message": "Product not found"}', response=CALLKARO_RESPONSE
        )
    )

    assert mapped.status == "error"
    assert mapped.error is not None
    assert (mapped.error.code, mapped.error.message) == ("tool_error", "Product not found")
    assert mapped.http_status == 200


def test_a_success_status_envelope_gives_its_data_as_the_result() -> None:
    mapped = map_outcome(
        outcome(
            body='{"status": "success", "data": {"available": true}}', response=CALLKARO_RESPONSE
        )
    )

    assert (mapped.status, mapped.result) == ("success", {"available": True})


def test_the_tools_error_policy_words_and_ends_as_its_platform_documents() -> None:
    failed = ExecutionOutcome(
        request=work_item(
            TOOL,
            errors={
                "messages": {"timeout": "Function timed out after 30 seconds"},
                "end_conversation_on": ["timeout"],
            },
        ),
        failure=ErrorInfo(code="timeout", message="slow"),
    )

    mapped = map_outcome(failed)

    assert mapped.error is not None
    assert mapped.error.message == "Function timed out after 30 seconds"
    assert mapped.end_conversation is True
