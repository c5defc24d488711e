"""Events for tests: work items for the pure cores, usage records for billing."""

from datetime import UTC, datetime, timedelta
from typing import Any

from shared.contract.events import ExecuteRequest, ToolCall, UsageRecord, utcnow
from shared.contract.tools import Tool


def work_item(
    request: dict[str, Any], arguments: dict[str, Any] | None = None, **tool: Any
) -> ExecuteRequest:
    call = ToolCall(
        call_id="call-1",
        conversation_id="conv-1",
        agent_id="a",
        tool="T",
        arguments=arguments or {},
        context={"From": "+1222"},
    )
    now = utcnow()
    return ExecuteRequest(
        call=call,
        tool=Tool.model_validate({"name": "T", "request": request, **tool}),
        account_id="acme",
        bound=dict(call.arguments),
        accepted_at=now,
        deadline_at=now + timedelta(seconds=10),
    )


T0 = datetime(2026, 11, 21, 10, 0, 0, 123000, tzinfo=UTC)


def usage(call_id: str, **fields: Any) -> UsageRecord:
    defaults: dict[str, Any] = {
        "conversation_id": "conv-42",
        "agent_id": "salon-bot",
        "account_id": "acme",
        "tool": "BookAppointment",
        "status": "success",
        "input_tokens": 21,
        "output_tokens": 14,
        "units": 0.275,
        "duration_ms": 183.4,
        "at": T0,
    }
    return UsageRecord(call_id=call_id, **(defaults | fields))
