"""The AsyncAPI 3.0 document of Midcall's subjects, generated from the event models.

``midcall asyncapi`` prints it; docs/asyncapi.json is its committed copy, kept
equal by a test, so the published schemas are always the ones the code reads.
"""

from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from shared.contract.events import (
    CallCancel,
    CallRun,
    ConversationEnded,
    ExecuteRequest,
    ExecutionOutcome,
    ReplayRequest,
    StoredEvents,
    StoredEventsRequest,
    ToolCall,
    ToolCallPending,
    ToolCallProgress,
    ToolCallResult,
    UsageRecord,
)

CONVERSATION = {
    "conversation_id": {"description": "The conversation's id (ToolCall.conversation_id)"}
}
ACCOUNT = {"account_id": {"description": "The account billed for the call"}}
RUNTIME_ACCOUNT = {
    "account_id": {"description": "The account whose runtime credentials the runtime used"}
}

# (channel, address, parameters, model, Midcall's action, summary, public)
# An address of None: the request's reply subject (the operation replying names it).
CHANNELS: list[tuple[str, str | None, dict[str, Any], type[BaseModel], str, str, bool]] = [
    (
        "toolCalls",
        "midcall.calls.{conversation_id}",
        CONVERSATION,
        ToolCall,
        "receive",
        "A runtime asks for a tool call (header Nats-Msg-Id: call_id).",
        True,
    ),
    (
        "pending",
        "midcall.conv.{conversation_id}.pending",
        CONVERSATION,
        ToolCallPending,
        "send",
        "The call was accepted; what to say meanwhile.",
        True,
    ),
    (
        "results",
        "midcall.conv.{conversation_id}.result",
        CONVERSATION,
        ToolCallResult,
        "send",
        "The call's outcome, exactly once per call.",
        True,
    ),
    (
        "progress",
        "midcall.conv.{conversation_id}.progress",
        CONVERSATION,
        ToolCallProgress,
        "send",
        "A long-running call's progress, as its API reported it through its callback token "
        "(added with the SDK); any number per call, all before its result.",
        True,
    ),
    (
        "ended",
        "midcall.conv.{conversation_id}.ended",
        CONVERSATION,
        ConversationEnded,
        "receive",
        "The conversation ended: in-flight calls are cancelled.",
        True,
    ),
    (
        "cancel",
        "midcall.conv.{conversation_id}.cancel",
        CONVERSATION,
        CallCancel,
        "receive",
        "A runtime cancels one call (added with the SDK): if still running, it is aborted, "
        "the tool's request.on_cancel is told, and its result is cancelled, once; a call "
        "already answered is left as it is.",
        True,
    ),
    (
        "stored",
        "midcall.conv.{conversation_id}.stored",
        CONVERSATION,
        StoredEventsRequest,
        "receive",
        "Request/reply, for a runtime signed in with its account's runtime credentials (added "
        "with the SDK): one call's events as stored (pending, progress, result), which its "
        "core subscription missed while it reconnected. The reply is StoredEvents.",
        True,
    ),
    (
        "storedReply",
        None,
        {},
        StoredEvents,
        "send",
        "The reply to a stored-events request, on the request's reply subject: the call's "
        "events in the order stored (none: empty), or an error saying why the request "
        "could not be read.",
        True,
    ),
    # The same, as they are in Midcall's NATS account for a runtime signed in with
    # its account's runtime credentials (it uses the subjects above; nats-server maps).
    (
        "accountToolCalls",
        "midcall.calls.{account_id}.{conversation_id}",
        RUNTIME_ACCOUNT | CONVERSATION,
        ToolCall,
        "receive",
        "A ToolCall an account's own runtime published on midcall.calls.{conversation_id}.",
        False,
    ),
    (
        "accountPending",
        "midcall.conv.{account_id}.{conversation_id}.pending",
        RUNTIME_ACCOUNT | CONVERSATION,
        ToolCallPending,
        "send",
        "Pending for a call of an account's own runtime; it hears it on "
        "midcall.conv.{conversation_id}.pending.",
        False,
    ),
    (
        "accountResults",
        "midcall.conv.{account_id}.{conversation_id}.result",
        RUNTIME_ACCOUNT | CONVERSATION,
        ToolCallResult,
        "send",
        "The result of a call of an account's own runtime; it hears it on "
        "midcall.conv.{conversation_id}.result.",
        False,
    ),
    (
        "accountProgress",
        "midcall.conv.{account_id}.{conversation_id}.progress",
        RUNTIME_ACCOUNT | CONVERSATION,
        ToolCallProgress,
        "send",
        "Progress of a call of an account's own runtime; it hears it on "
        "midcall.conv.{conversation_id}.progress.",
        False,
    ),
    (
        "accountEnded",
        "midcall.conv.{account_id}.{conversation_id}.ended",
        RUNTIME_ACCOUNT | CONVERSATION,
        ConversationEnded,
        "receive",
        "An account's own runtime ended its conversation (published on "
        "midcall.conv.{conversation_id}.ended): that account's calls in it are cancelled.",
        False,
    ),
    (
        "accountCancel",
        "midcall.conv.{account_id}.{conversation_id}.cancel",
        RUNTIME_ACCOUNT | CONVERSATION,
        CallCancel,
        "receive",
        "An account's own runtime cancels one of its calls (published on "
        "midcall.conv.{conversation_id}.cancel).",
        False,
    ),
    (
        "accountStored",
        "midcall.conv.{account_id}.{conversation_id}.stored",
        RUNTIME_ACCOUNT | CONVERSATION,
        StoredEventsRequest,
        "receive",
        "An account's own runtime asks for a call's stored events (published on "
        "midcall.conv.{conversation_id}.stored); read from that account's subjects only.",
        False,
    ),
    (
        "usage",
        "midcall.usage.{account_id}",
        ACCOUNT,
        UsageRecord,
        "send",
        "One priced record per finished call.",
        True,
    ),
    (
        "execute",
        "midcall.exec.{conversation_id}",
        CONVERSATION,
        ExecuteRequest,
        "send",
        "Internal: dispatcher to http-executor.",
        False,
    ),
    (
        "executed",
        "midcall.executed.{conversation_id}",
        CONVERSATION,
        ExecutionOutcome,
        "send",
        "Internal: http-executor to result-injector.",
        False,
    ),
    (
        "deadline",
        "midcall.deadline.{conversation_id}",
        CONVERSATION,
        ExecuteRequest,
        "send",
        "Internal: nats-server publishes a call's work item here half a second after its "
        "deadline (a message schedule the dispatcher keeps on midcall.timers.>); an injector "
        "answers a call no one answered with a timeout.",
        False,
    ),
    (
        "runs",
        "midcall.runs.{conversation_id}",
        CONVERSATION,
        CallRun,
        "send",
        "Internal: a failed run or a replay, dispatcher or injector to the registry's "
        "failed-calls store.",
        False,
    ),
    (
        "replay",
        "midcall.replay.{conversation_id}",
        CONVERSATION,
        ReplayRequest,
        "send",
        "Internal: registry to dispatcher, run a failed call again.",
        False,
    ),
]


JsonSchemaMode = Literal["validation", "serialization"]


def _mode(action: str) -> JsonSchemaMode:
    # What Midcall receives is described as it validates it; what it sends, as it writes it.
    return "validation" if action == "receive" else "serialization"


def document() -> dict[str, Any]:
    models = [(entry[3], _mode(entry[4])) for entry in CHANNELS]
    refs, definitions = models_json_schema(models, ref_template="#/components/schemas/{model}")
    doc: dict[str, Any] = {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Midcall",
            "version": "1",
            "description": "Tool calls for voice AI agents, over NATS JetStream. Internal "
            "channels are documented, not frozen.",
        },
        "defaultContentType": "application/json",
        "channels": {},
        "operations": {},
        "components": {"schemas": definitions.get("$defs", {}), "messages": {}},
    }
    for name, address, parameters, model, action, summary, public in CHANNELS:
        message = model.__name__
        doc["components"]["messages"][message] = {
            "name": message,
            "payload": refs[(model, _mode(action))],
        }
        doc["channels"][name] = {
            "address": address,
            "parameters": parameters,
            "description": summary,
            "messages": {message: {"$ref": f"#/components/messages/{message}"}},
            "tags": [{"name": "public" if public else "internal"}],
        }
        operation = {
            "action": action,
            "channel": {"$ref": f"#/channels/{name}"},
            "messages": [{"$ref": f"#/channels/{name}/messages/{message}"}],
        }
        if f"{name}Reply" in {entry[0] for entry in CHANNELS}:
            operation["reply"] = {"channel": {"$ref": f"#/channels/{name}Reply"}}
        if address is not None:
            doc["operations"][f"{action}{name[0].upper()}{name[1:]}"] = operation
    return doc
