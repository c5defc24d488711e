"""Running failed calls again, or showing what that would send (``--dry-run``).

A call is replayed through the normal path: a ``ReplayRequest`` goes to the
dispatchers, which check and bind it like a new call (against the tool as it
is now, or as first called), and the executor sends it with the same
``Idempotency-Key``. Its result reaches the conversation marked as a replay
with its attempt number, and its run comes back here. A dead letter is
published again on the subject it first came on.
"""

import asyncio
import secrets
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.registry.failures import FailedCallDetail, FailureStore, Filters
from services.registry.store import ToolStore
from shared.calls.binding import Entry, bind, check_arguments, deadline
from shared.calls.preview import FunctionPreview, RequestPreview, preview, preview_function
from shared.contract import subjects
from shared.contract.addressing import conversation_key
from shared.contract.catalog import DEFAULT_ACCOUNT
from shared.contract.errors import CallRejected
from shared.contract.events import ID_PATTERN, ExecuteRequest, ReplayRequest, utcnow
from shared.contract.tools import Tool
from shared.fabric.messaging import Publisher, msg_id
from shared.process.http_api import RowId, UtcDatetime, Utf8Text

MAX_REPLAY = 10_000


class NotReplayable(Exception):
    """This failed call cannot be run again the way it was asked for."""


class ReplayBody(BaseModel):
    """``POST /v1/failed/replay``: which failed calls, and how."""

    model_config = ConfigDict(extra="forbid")

    ids: list[RowId] | None = Field(default=None, max_length=MAX_REPLAY)
    call_ids: list[Utf8Text] | None = Field(default=None, max_length=MAX_REPLAY)
    agent_id: str | None = Field(default=None, pattern=ID_PATTERN)
    account_id: str | None = Field(default=None, pattern=ID_PATTERN)
    tool: str | None = Field(default=None, max_length=128)
    code: str | None = Field(default=None, max_length=64)
    since: UtcDatetime | None = None
    until: UtcDatetime | None = None
    as_called: bool = False
    dry_run: bool = False
    limit: int = Field(default=1000, ge=1, le=MAX_REPLAY)

    @model_validator(mode="after")
    def _selects_something(self) -> "ReplayBody":
        named = self.ids is not None or self.call_ids is not None
        filtered = any(
            value is not None
            for value in (self.agent_id, self.account_id, self.tool, self.code, self.since)
        )
        if named == filtered:
            raise ValueError(
                "name the failed calls (ids or call_ids) or select them with filters "
                "(agent_id, account_id, tool, code, since), not both and not neither"
            )
        return self


class ReplayItem(BaseModel):
    id: int
    kind: Literal["call", "dead_letter"]
    call_id: str | None = None
    conversation_id: str | None = None
    # queued: sent to run again; planned: what a dry run would send; skipped: not run.
    status: Literal["queued", "planned", "skipped"]
    attempt: int | None = None
    reason: str | None = None
    request: RequestPreview | None = None
    # Planned for a python tool: the function call (its ``request`` stays unset).
    function: FunctionPreview | None = None
    subject: str | None = None  # where a dead letter goes again


class ReplayReport(BaseModel):
    dry_run: bool
    queued: int
    skipped: int
    items: list[ReplayItem]


class Replayer:
    def __init__(self, failures: FailureStore, tools: ToolStore, publisher: Publisher) -> None:
        self._failures = failures
        self._tools = tools
        self._publisher = publisher

    async def replay(self, body: ReplayBody) -> ReplayReport:
        rows = await asyncio.to_thread(self._select, body)
        items = [await self._one(row, body) for row in rows]
        return ReplayReport(
            dry_run=body.dry_run,
            queued=sum(item.status == "queued" for item in items),
            skipped=sum(item.status == "skipped" for item in items),
            items=items,
        )

    def _select(self, body: ReplayBody) -> list[FailedCallDetail]:
        if body.ids is not None:
            ids = body.ids[: body.limit]
        elif body.call_ids is not None:
            ids = []
            for call_id in body.call_ids[: body.limit]:
                ids += self._failures.ids(Filters(call_id=call_id), MAX_REPLAY)
        else:
            ids = self._failures.ids(_filters(body), body.limit)
        rows = self._failures.details(ids)
        # An account key's replay is held to its own account, however calls were named.
        return [row for row in rows if body.account_id in (None, row.account_id)]

    async def _one(self, row: FailedCallDetail, body: ReplayBody) -> ReplayItem:
        item = ReplayItem(
            id=row.id,
            kind=row.kind,
            call_id=row.call_id,
            conversation_id=row.conversation_id,
            status="planned" if body.dry_run else "queued",
        )
        if row.dead_letter is not None:
            item.subject = row.dead_letter.subject
            if not body.dry_run:
                await self._publish_again(row)
            return item
        try:
            tool = await asyncio.to_thread(self._tool_for, row, body.as_called)
            if body.dry_run:
                planned = _planned(row, tool)
                if isinstance(planned, FunctionPreview):
                    item.function = planned
                else:
                    item.request = planned
            else:
                item.attempt = await self._queue(row, tool if body.as_called else None)
        except NotReplayable as refused:
            item.status, item.reason = "skipped", str(refused)
        except CallRejected as refused:  # what the dispatcher or executor would answer
            item.status, item.reason = (
                "skipped",
                f"it would fail as {refused.code}: {refused.message}",
            )
        return item

    def _tool_for(self, row: FailedCallDetail, as_called: bool) -> Tool:
        if as_called:
            if row.tool_definition is None:
                raise NotReplayable(
                    "the call failed before any tool was used; replay it without as_called"
                )
            return row.tool_definition
        assert row.call is not None
        assert row.agent_id is not None
        tool = self._tools.get_tool(row.agent_id, row.call.tool)
        if tool is None:
            raise NotReplayable(
                f"agent '{row.agent_id}' has no tool '{row.call.tool}' now; "
                "replay it as_called to run the tool as it was"
            )
        return tool

    async def _queue(self, row: FailedCallDetail, tool: Tool | None) -> int:
        assert row.call is not None
        attempt = await asyncio.to_thread(self._failures.start_replay, row.id)
        call = row.call
        request = ReplayRequest(
            call=call,
            attempt=attempt,
            account_id=row.account_id,
            tool=tool,
            runtime_account=row.runtime_account,
        )
        key = conversation_key(row.account_id or "", call.conversation_id)
        await self._publisher.event(
            request,
            subjects.replay(call.conversation_id),
            subjects.OPS_STREAM,
            msg_id(key, call.call_id, "replay", attempt),
        )
        return attempt

    async def _publish_again(self, row: FailedCallDetail) -> None:
        letter = row.dead_letter
        assert letter is not None
        replays = await asyncio.to_thread(self._failures.start_replay, row.id)
        # Its own dedupe id (the original's may still be in the stream's window), with a
        # nonce: whoever may publish on that subject must not be able to take it first.
        nonce = secrets.token_hex(8)
        headers = {"Nats-Msg-Id": f"replay/{letter.stage}/{letter.sequence}/{replays}/{nonce}"}
        await self._publisher.raw(letter.body, letter.subject, None, headers)
        await asyncio.to_thread(self._failures.replayed, row.id)


def _planned(row: FailedCallDetail, tool: Tool) -> RequestPreview | FunctionPreview:
    """The request the replay would send: checked and bound as the dispatcher would."""
    call = row.call
    assert call is not None
    check_arguments(call, Entry.of(tool).validator)
    now = utcnow()
    work = ExecuteRequest(
        call=call,
        tool=tool,
        account_id=row.account_id or DEFAULT_ACCOUNT,
        bound=bind(call, tool),
        accepted_at=now,
        deadline_at=deadline(call, tool, now),
    )
    return preview_function(work) if tool.kind == "python" else preview(work)


def _filters(body: ReplayBody) -> Filters:
    # Picked by filter, a call a replay already fixed is left alone.
    return Filters(
        agent_id=body.agent_id,
        account_id=body.account_id,
        tool=body.tool,
        code=body.code,
        since=body.since,
        until=body.until,
        state="failed",
    )
