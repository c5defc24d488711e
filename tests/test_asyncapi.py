"""The AsyncAPI document: generated from the models, committed, and in step with the contract."""

import json
from pathlib import Path

from services.asyncapi import document
from shared.contract import subjects

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_the_committed_document_is_the_generated_one() -> None:
    committed = json.loads((DOCS / "asyncapi.json").read_text())

    assert committed == document(), "run: midcall asyncapi > docs/asyncapi.json"


def test_every_contract_subject_has_a_channel_with_its_event() -> None:
    channels = {c["address"]: list(c["messages"]) for c in document()["channels"].values()}

    assert channels[subjects.calls("{conversation_id}")] == ["ToolCall"]
    assert channels[subjects.pending("{conversation_id}")] == ["ToolCallPending"]
    assert channels[subjects.result("{conversation_id}")] == ["ToolCallResult"]
    assert channels[subjects.ended("{conversation_id}")] == ["ConversationEnded"]
    assert channels[subjects.usage("{account_id}")] == ["UsageRecord"]


def test_message_payloads_resolve_to_schemas_with_the_contract_fields() -> None:
    doc = document()
    schemas = doc["components"]["schemas"]

    result = schemas["ToolCallResult"]["properties"]
    assert {
        "call_id",
        "conversation_id",
        "tool",
        "status",
        "result",
        "agent_message",
        "speak",
        "variables",
        "error",
        "end_conversation",
        "http_status",
        "attempts",
        "duration_ms",
        "at",
    } <= set(result)
    for message in doc["components"]["messages"].values():
        assert message["payload"]["$ref"].removeprefix("#/components/schemas/") in schemas
