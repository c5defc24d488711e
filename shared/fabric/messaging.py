"""Publishing the fabric's events, and decoding what arrives.

Every publish goes through JetStream with a ``Nats-Msg-Id`` derived from the
call, so a service that handles the same message twice (a redelivery after a
crash) cannot emit the same event twice within the streams' duplicate window.
"""

import json
import logging
from typing import Any, TypeVar

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from opentelemetry import propagate
from pydantic import BaseModel, ValidationError

from shared.contract import json_depth, subjects
from shared.contract.addressing import Conversation, conversation_key
from shared.contract.events import CallRun, ToolCallPending, ToolCallResult, UsageRecord
from shared.fabric.outages import FIRST_TRY_S, PATIENCE_S, patiently
from shared.observability.metrics import DEAD_LETTERS

log = logging.getLogger("midcall.messaging")

REASON_HEADER = "Midcall-Reason"
SUBJECT_HEADER = "Midcall-Subject"
MAX_REASON_CHARS = 512
# Room for every message the fabric makes (an outcome holds a work item, which holds
# a call, which holds arguments of up to MAX_DEPTH levels), and far less than the
# parsers' own recursion limits (pydantic's 200, the interpreter's 1,000).
MESSAGE_DEPTH = 2 * json_depth.MAX_DEPTH

M = TypeVar("M", bound=BaseModel)


class Undecodable(Exception):
    """A message body that is not the model it should be."""


def decode(model: type[M], body: bytes, context: dict[str, Any] | None = None) -> M:
    """``body`` as ``model``, or ``Undecodable`` saying what is wrong with it.

    A body nested past ``MESSAGE_DEPTH`` is validated as far as it can be read,
    so a call with arguments a million levels deep is told what one past the
    arguments' own limit is.
    """
    readable = json_depth.shallow(body, MESSAGE_DEPTH)
    try:
        decoded = model.model_validate_json(readable, context=context)
    except ValidationError as exc:
        raise Undecodable(describe(exc)) from exc
    if readable != body:  # what was cut off could not be checked
        too_deep = json_depth.too_deep("the message", MESSAGE_DEPTH)
        raise Undecodable(f"invalid {model.__name__}: body: {too_deep}")
    return decoded


def describe(error: ValidationError) -> str:
    """One header-safe line naming what was wrong with a message."""
    parts = (f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in error.errors())
    reason = f"invalid {error.title}: " + "; ".join(parts)
    return " ".join(reason.split())[:MAX_REASON_CHARS]


def loose_fields(body: bytes) -> dict[str, Any]:
    """Whatever top-level fields a broken message still has, to address an error reply.

    However deep the message, its top-level fields can be read: anything nested
    past ``MESSAGE_DEPTH`` is read as null.
    """
    try:
        value = json.loads(json_depth.shallow(body, MESSAGE_DEPTH))
    except ValueError:  # not JSON
        return {}
    return value if isinstance(value, dict) else {}


def well_formed(text: str) -> str:
    """``text`` with lone surrogates (which JSON escapes can carry) replaced by U+FFFD.

    Such a string cannot be encoded as UTF-8, so an event naming it could
    never be published.
    """
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def msg_id(conversation: str, call_id: str, kind: str, attempt: int = 1) -> str:
    """The dedupe id of one event of one run of a call; a replay's events are its own.
    ``conversation`` is a ``Conversation.key``: two accounts' calls never share one."""
    base = f"{conversation}/{call_id}/{kind}"
    return base if attempt == 1 else f"{base}/{attempt}"


class Publisher:
    """Publishes on the service's own connection, each publish confirmed by JetStream.

    The current trace context goes along in the headers, so the next service
    (or the runtime) continues the same trace.
    """

    def __init__(self, js: JetStreamContext) -> None:
        self._js = js

    async def event(self, event: BaseModel, subject: str, stream: str, dedupe_id: str) -> None:
        body = event.model_dump_json().encode()
        await self.raw(body, subject, stream, {"Nats-Msg-Id": dedupe_id})

    async def raw(
        self, body: bytes, subject: str, stream: str | None, headers: dict[str, str]
    ) -> None:
        """Publish ``body``; ``stream`` names the stream it must land in, when known."""
        propagate.inject(headers)

        # Each try is as long as patiently allows (a lost ack: the server restarted, a
        # leader is being elected); nats-py's own 0.5 s would cut a loaded server's short.
        async def attempt() -> None:
            await self._js.publish(
                subject, body, timeout=FIRST_TRY_S, stream=stream, headers=headers
            )

        # Sent again with the same Nats-Msg-Id, so a copy JetStream did store is kept once.
        await patiently(attempt, PATIENCE_S, target=stream)

    async def pending(self, pending: ToolCallPending, conversation: Conversation) -> None:
        await self.event(
            pending,
            conversation.pending_subject,
            conversation.stream,
            msg_id(conversation.key, pending.call_id, "pending"),
        )

    async def result(self, result: ToolCallResult, conversation: Conversation) -> None:
        await self.event(
            result,
            conversation.result_subject,
            conversation.stream,
            msg_id(conversation.key, result.call_id, "result", result.replay_attempt or 1),
        )

    async def usage(self, usage: UsageRecord) -> None:
        await self.event(
            usage,
            subjects.usage(usage.account_id),
            subjects.USAGE_STREAM,
            msg_id(
                conversation_key(usage.account_id, usage.conversation_id),
                usage.call_id,
                "usage",
                usage.attempt,
            ),
        )

    async def run(self, run: CallRun) -> None:
        result = run.result
        key = conversation_key(run.account_id or "", result.conversation_id)
        await self.event(
            run,
            subjects.runs(result.conversation_id),
            subjects.OPS_STREAM,
            msg_id(key, result.call_id, "run", result.replay_attempt or 1),
        )


class DeadLetters:
    """Where a service sets aside messages it cannot parse, with why, for ops to replay."""

    def __init__(self, publisher: Publisher, stage: str) -> None:
        self.stage = stage
        self._publisher = publisher

    async def read(
        self, model: type[M], message: Msg, context: dict[str, Any] | None = None
    ) -> M | None:
        """The message as ``model``, or None once it has been set aside as unreadable."""
        try:
            return decode(model, message.data, context)
        except Undecodable as exc:
            await self.put(message, str(exc))
            return None

    async def set_aside(self, message: Msg, failure: Exception) -> None:
        """A ``GiveUp`` for messages no retry will get through: kept with the failure."""
        await self.put(message, f"{type(failure).__name__}: {failure}")

    async def put(self, message: Msg, reason: str) -> None:
        log.warning("%s: message on %s set aside: %s", self.stage, message.subject, reason)
        DEAD_LETTERS.labels(self.stage).inc()
        headers = {
            REASON_HEADER: " ".join(reason.split())[:MAX_REASON_CHARS],
            SUBJECT_HEADER: message.subject,
        }
        if message.reply:  # a JetStream delivery
            # A redelivery after a crash between this publish and the ack is de-duplicated.
            sequence = message.metadata.sequence.stream
            headers["Nats-Msg-Id"] = f"{self.stage}-{message.subject}-{sequence}"
        await self._publisher.raw(
            message.data, subjects.dead(self.stage), subjects.DEAD_STREAM, headers
        )
