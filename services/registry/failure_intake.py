"""Filling the failed-calls store from NATS: failed runs and replays, and dead letters.

Both arrive in batches and are written one transaction per batch. A report
that cannot be read is itself kept as a dead letter, so nothing loops.
"""

import asyncio
import base64
from collections.abc import Callable
from typing import Any, ParamSpec

from nats.aio.client import Client
from nats.aio.msg import Msg

from services.registry.failures import DeadLetter, FailureStore, StoreUnavailable
from shared.contract import subjects
from shared.contract.events import CallRun
from shared.contract.tools import DECLARED_BEFORE
from shared.fabric.consumer import BatchConsumer, Retry
from shared.fabric.messaging import REASON_HEADER, SUBJECT_HEADER, Undecodable, decode, loose_fields
from shared.fabric.pull_flow import Durable

RUNS = Durable(subjects.OPS_STREAM, subjects.ALL_RUNS, "midcall-registry-runs")
DEAD_LETTERS = Durable(subjects.DEAD_STREAM, subjects.ALL_DEAD, "midcall-registry-dead-letters")
BATCH = 128
# How long a batch waits before it is tried again after a database failure.
RETRY_DELAY_S = 5.0

# Subjects whose third token is the conversation: midcall.<kind>.<conversation_id>...
NAMED_BY_CONVERSATION = frozenset({"calls", "conv", "exec", "executed"})

P = ParamSpec("P")


class FailureIntake:
    def __init__(self, store: FailureStore, retry_delay_s: float = RETRY_DELAY_S) -> None:
        self._store = store
        self._retry_delay_s = retry_delay_s

    async def runs(self, batch: list[Msg]) -> None:
        reports: list[CallRun] = []
        unreadable: list[tuple[DeadLetter, dict[str, Any]]] = []
        for message in batch:
            try:
                reports.append(decode(CallRun, message.data, DECLARED_BEFORE))
            except Undecodable as exc:
                unreadable.append((_letter(message, "runs", message.subject, str(exc)), {}))
        await self._write(self._store.record_runs, reports)
        if unreadable:
            await self._write(self._store.record_dead_letters, unreadable)

    async def dead_letters(self, batch: list[Msg]) -> None:
        letters = []
        for message in batch:
            headers = message.headers or {}
            stage = subjects.token_at(message.subject, 2) or "unknown"
            subject = headers.get(SUBJECT_HEADER, "")
            letter = _letter(message, stage, subject, headers.get(REASON_HEADER, ""))
            letters.append((letter, _call_fields(message.data, subject)))
        await self._write(self._store.record_dead_letters, letters)

    async def _write(self, write: Callable[P, object], *args: P.args, **kwargs: P.kwargs) -> None:
        try:
            await asyncio.to_thread(write, *args, **kwargs)
        except StoreUnavailable as exc:
            raise Retry(self._retry_delay_s, str(exc)) from exc


def _letter(message: Msg, stage: str, subject: str, reason: str) -> DeadLetter:
    return DeadLetter(
        stage=stage,
        subject=subject,
        reason=reason,
        sequence=message.metadata.sequence.stream,
        body_base64=base64.b64encode(message.data).decode(),
    )


def _call_fields(body: bytes, subject: str) -> dict[str, Any]:
    """Whatever addresses the call in a broken message: a ToolCall's own fields, or those
    of the call inside a work item or an outcome."""
    fields = loose_fields(body)
    request = fields.get("request")
    nested = request.get("call") if isinstance(request, dict) else fields.get("call")
    call = nested if isinstance(nested, dict) else fields
    found = {name: call.get(name) for name in ("call_id", "agent_id", "tool")}
    # A call's own account_id is the runtime's word; a work item's is the dispatcher's.
    holder = request if isinstance(request, dict) else fields
    found["account_id"] = None if call is fields else holder.get("account_id")
    found["conversation_id"] = call.get("conversation_id")
    if not found["conversation_id"] and subjects.token_at(subject, 1) in NAMED_BY_CONVERSATION:
        found["conversation_id"] = subjects.token_at(subject, 2)
    return found


def consumers(client: Client, store: FailureStore) -> list[BatchConsumer]:
    intake = FailureIntake(store)
    return [
        BatchConsumer(client, RUNS, intake.runs, BATCH),
        BatchConsumer(client, DEAD_LETTERS, intake.dead_letters, BATCH),
    ]
