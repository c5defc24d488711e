"""Publishing the fabric's events, and decoding what arrives.

Every publish goes through JetStream with a ``Nats-Msg-Id`` derived from the
call, so a service that handles the same message twice (a redelivery after a
crash) cannot emit the same event twice within the streams' duplicate window.
"""

import json
import logging
from typing import Any, TypeVar

from faststream.message import StreamMessage
from faststream.nats import JStream, NatsBroker
from pydantic import BaseModel, ValidationError

from shared import subjects
from shared.events import ToolCallPending, ToolCallResult, UsageRecord

log = logging.getLogger("midcall.messaging")

REASON_HEADER = "Midcall-Reason"
SUBJECT_HEADER = "Midcall-Subject"
MAX_REASON_CHARS = 512
# JetStream's default 0.5 s ack wait is far below a clustered fail-over (~6 s).
PUBLISH_TIMEOUT_S = 10.0

M = TypeVar("M", bound=BaseModel)


class Undecodable(Exception):
    """A message body that is not the model it should be."""


def decode(model: type[M], body: bytes) -> M:
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise Undecodable(describe(exc)) from exc


def describe(error: ValidationError) -> str:
    """One header-safe line naming what was wrong with a message."""
    parts = (f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in error.errors())
    reason = f"invalid {error.title}: " + "; ".join(parts)
    return " ".join(reason.split())[:MAX_REASON_CHARS]


def loose_fields(body: bytes) -> dict[str, Any]:
    """Whatever top-level fields a broken message still has, to address an error reply."""
    try:
        value = json.loads(body)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def msg_id(conversation_id: str, call_id: str, kind: str) -> str:
    return f"{conversation_id}/{call_id}/{kind}"


async def publish_event(
    broker: NatsBroker, event: BaseModel, subject: str, stream: str, dedupe_id: str
) -> None:
    await broker.publish(
        event, subject, headers={"Nats-Msg-Id": dedupe_id}, stream=stream, timeout=PUBLISH_TIMEOUT_S
    )


async def publish_pending(broker: NatsBroker, pending: ToolCallPending) -> None:
    await publish_event(
        broker,
        pending,
        subjects.pending(pending.conversation_id),
        subjects.CONV_STREAM,
        msg_id(pending.conversation_id, pending.call_id, "pending"),
    )


async def publish_result(broker: NatsBroker, result: ToolCallResult) -> None:
    await publish_event(
        broker,
        result,
        subjects.result(result.conversation_id),
        subjects.CONV_STREAM,
        msg_id(result.conversation_id, result.call_id, "result"),
    )


async def publish_usage(broker: NatsBroker, usage: UsageRecord) -> None:
    await publish_event(
        broker,
        usage,
        subjects.usage(usage.account_id),
        subjects.USAGE_STREAM,
        msg_id(usage.conversation_id, usage.call_id, "usage"),
    )


async def raw_body(message: StreamMessage[Any]) -> bytes:
    """FastStream decoder that keeps the bytes: each handler parses (and dead-letters) itself.

    Left to FastStream, a broken JSON body fails before the handler runs and is
    redelivered forever. Async on purpose: FastStream runs a sync decoder in a
    worker thread, a thread hop per message.
    """
    return message.body


class DeadLetters:
    """Where a service sets aside messages it cannot parse, with why, for ops to replay."""

    def __init__(self, broker: NatsBroker, stage: str) -> None:
        self.stage = stage
        self.publisher = broker.publisher(
            subjects.dead(stage),
            stream=JStream(subjects.DEAD_STREAM, declare=False),
            schema=bytes,
            title=f"{stage} dead letters",
            description=f"Messages the {stage} stage could not parse, as received.",
        )

    async def put(self, message: StreamMessage[Any], reason: str) -> None:
        raw = message.raw_message
        subject = getattr(raw, "subject", "")
        log.warning("%s: message on %s set aside: %s", self.stage, subject, reason)
        headers = {
            REASON_HEADER: " ".join(reason.split())[:MAX_REASON_CHARS],
            SUBJECT_HEADER: subject,
        }
        metadata = getattr(raw, "metadata", None)
        if metadata is not None:
            # A redelivery after a crash between this publish and the ack is de-duplicated.
            headers["Nats-Msg-Id"] = f"{self.stage}-{subject}-{metadata.sequence.stream}"
        await self.publisher.publish(message.body, headers=headers, timeout=PUBLISH_TIMEOUT_S)
