"""The failed-calls store: every call ops may want to see and run again, in SQL.

One row per failed call (or per dead-lettered message), keyed so that a
redelivered report changes nothing. A call's row keeps everything needed to
run it again (the call, the tool as first used) and each of its runs: the
original and every replay, with their HTTP attempts. The row's summary
(code, message, state) follows its latest run.

Methods block: async callers run them in a thread.
"""

import base64
import hashlib
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, field_serializer
from sqlalchemy import Column, Engine, Index, Text, func, literal, update
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Field as SqlField
from sqlmodel import Session, SQLModel, col, select

from services.registry import dialects
from shared.contract.events import CallRun, ErrorInfo, HttpAttempt, ToolCall, utcnow
from shared.contract.tools import DECLARED_BEFORE, Tool
from shared.process.storage import UtcDateTime

Kind = Literal["call", "dead_letter"]
# failed: the last run failed; replaying: a replay was asked for and has not ended;
# replayed: a replay succeeded (for a dead letter: it was published again).
State = Literal["failed", "replaying", "replayed"]
DEAD_LETTER_CODE = "dead_letter"


class StoreUnavailable(Exception):
    """The database failed; the same operation may succeed later."""


class Run(BaseModel):
    """One run of a failed call: the original (attempt 1) or a replay."""

    attempt: int
    replay: bool = False
    status: Literal["success", "error"]
    error: ErrorInfo | None = None
    http_status: int | None = None
    at: datetime
    duration_ms: float = 0.0
    trace_id: str | None = None
    http_attempts: list[HttpAttempt] = Field(default_factory=list)


class DeadLetter(BaseModel):
    """A message a service could not read, as it arrived, with why."""

    stage: str
    subject: str
    reason: str
    sequence: int
    body_base64: str

    @property
    def body(self) -> bytes:
        return base64.b64decode(self.body_base64)


class FailedCall(BaseModel):
    """What ``GET /v1/failed`` lists; ``show`` adds ``Details``."""

    id: int
    kind: Kind
    state: State
    conversation_id: str | None = None
    call_id: str | None = None
    agent_id: str | None = None
    account_id: str | None = None
    tool: str | None = None
    code: str
    message: str
    http_status: int | None = None
    trace_id: str | None = None
    first_failed_at: datetime
    last_at: datetime
    replays: int = 0  # replays asked for
    last_attempt: int = 1  # the latest run that ended: 1 the original, 2 the first replay


class Details(BaseModel):
    call: ToolCall | None = None
    # The account whose own runtimes placed the call (None: the shared runtime user):
    # a replay's result goes to the runtimes that heard the original's.
    runtime_account: str | None = None
    # The tool as the call first used it: what ``--as-called`` runs again.
    tool_definition: Tool | None = None
    runs: list[Run] = Field(default_factory=list)
    dead_letter: DeadLetter | None = None


class FailedCallDetail(FailedCall):
    call: ToolCall | None = None
    runtime_account: str | None = None
    tool_definition: Tool | None = None
    runs: list[Run] = Field(default_factory=list)
    dead_letter: DeadLetter | None = None

    @field_serializer("tool_definition")
    def _as_shown(self, tool: Tool | None) -> dict[str, Any] | None:
        # As the tools API shows it: the registry's internal fields are for the executor.
        return None if tool is None else dialects.show(tool)


class Filters(BaseModel):
    ids: list[int] | None = None
    agent_id: str | None = None
    account_id: str | None = None
    tool: str | None = None
    code: str | None = None
    call_id: str | None = None
    state: State | None = None
    since: datetime | None = None  # inclusive, on the last run's time
    until: datetime | None = None  # exclusive


class FailedCallRow(SQLModel, table=True):
    __tablename__ = "failed_calls"
    __table_args__ = (
        Index("ix_failed_calls_last_at", "last_at"),
        Index("ix_failed_calls_account_last_at", "account_id", "last_at"),
        Index("ix_failed_calls_call_id", "call_id"),
    )

    id: int | None = SqlField(default=None, primary_key=True)
    key: str = SqlField(unique=True, max_length=200)
    kind: str = SqlField(max_length=16)
    state: str = SqlField(max_length=16)
    conversation_id: str | None = SqlField(default=None, max_length=128)
    call_id: str | None = SqlField(default=None, sa_type=Text)
    agent_id: str | None = SqlField(default=None, max_length=128)
    account_id: str | None = SqlField(default=None, max_length=128)
    tool: str | None = SqlField(default=None, sa_type=Text)
    code: str = SqlField(max_length=64)
    message: str = SqlField(sa_type=Text)
    http_status: int | None = None
    trace_id: str | None = SqlField(default=None, max_length=64)
    first_failed_at: datetime = SqlField(sa_column=Column(UtcDateTime(), nullable=False))
    last_at: datetime = SqlField(sa_column=Column(UtcDateTime(), nullable=False))
    replays: int = 0
    last_attempt: int = 1
    # ``Details`` as JSON: the call, the tool as used, the runs, or the dead letter.
    details: str = SqlField(sa_type=Text)


def call_row_key(account_id: str | None, conversation_id: str, call_id: str) -> str:
    """One account's call: two accounts' calls never share a row, whatever their ids."""
    # Call ids are the runtime's free text, of any length: that part is a digest.
    digest = hashlib.sha256(f"{conversation_id}\0{call_id}".encode()).hexdigest()
    return f"call:{account_id or ''}:{digest}"


def upgrade_keys(engine: Engine) -> None:
    """Give rows keyed before accounts were part of the key (``call:<digest>``) their
    account: ``call:<account>:<digest>``. Idempotent; nothing to do once done."""
    statement = (
        update(FailedCallRow)
        .where(col(FailedCallRow.kind) == "call")
        .where(col(FailedCallRow.key).not_like("call:%:%"))
        .values(
            key=literal("call:")
            + func.coalesce(col(FailedCallRow.account_id), "")
            + literal(":")
            + func.substr(col(FailedCallRow.key), len("call:") + 1)
        )
    )
    with engine.begin() as connection:
        connection.execute(statement)


class FailureStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def record_runs(self, runs: Sequence[CallRun]) -> None:
        """Add each run to its call's row (one transaction); a run seen before is skipped."""
        with self._session() as session:
            for run in runs:
                _add_run(session, run)

    def record_dead_letters(self, letters: Sequence[tuple[DeadLetter, dict[str, Any]]]) -> None:
        """Keep each dead letter once; ``fields`` are what could be read of its body."""
        with self._session() as session:
            for letter, fields in letters:
                key = f"dead:{letter.stage}:{letter.sequence}"
                if session.exec(
                    select(FailedCallRow.id).where(col(FailedCallRow.key) == key)
                ).first():
                    continue
                session.add(_dead_letter_row(key, letter, fields))

    def find(self, filters: Filters, limit: int, before_id: int | None = None) -> list[FailedCall]:
        """Newest first; ``before_id`` pages on from the last id of the previous page."""
        query = _filtered(select(FailedCallRow), filters)
        if before_id is not None:
            query = query.where(col(FailedCallRow.id) < before_id)
        query = query.order_by(col(FailedCallRow.id).desc()).limit(limit)
        with self._session() as session:
            return [_summary(row) for row in session.exec(query).all()]

    def get(self, failure_id: int) -> FailedCallDetail | None:
        with self._session() as session:
            row = session.get(FailedCallRow, failure_id)
            return None if row is None else _detail(row)

    def details(self, ids: Sequence[int]) -> list[FailedCallDetail]:
        query = select(FailedCallRow).where(col(FailedCallRow.id).in_(ids))
        with self._session() as session:
            return [_detail(row) for row in session.exec(query.order_by(col(FailedCallRow.id)))]

    def ids(self, filters: Filters, limit: int) -> list[int]:
        """Ids matching ``filters``, oldest first (the order a replay runs them in)."""
        query = _filtered(select(FailedCallRow.id), filters).order_by(col(FailedCallRow.id))
        with self._session() as session:
            return [row_id for row_id in session.exec(query.limit(limit)).all() if row_id]

    def start_replay(self, failure_id: int) -> int:
        """Count one more replay of a row and return its attempt number (2 for the first)."""
        statement = (
            update(FailedCallRow)
            .where(col(FailedCallRow.id) == failure_id)
            .values(replays=col(FailedCallRow.replays) + 1, state="replaying")
            .returning(col(FailedCallRow.replays))
        )
        with self._session() as session:
            replays = session.exec(statement).scalar_one()
        return int(replays) + 1

    def replayed(self, failure_id: int) -> None:
        """A dead letter published again: nothing reports back, so it is done."""
        statement = (
            update(FailedCallRow)
            .where(col(FailedCallRow.id) == failure_id)
            .values(state="replayed", last_at=utcnow())
        )
        with self._session() as session:
            session.exec(statement)

    @contextmanager
    def _session(self) -> Iterator[Session]:
        try:
            with Session(self._engine) as session:
                yield session
                session.commit()
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"failed-calls storage failed: {exc}") from exc


def _add_run(session: Session, report: CallRun) -> None:
    result, call = report.result, report.call
    run = Run(
        attempt=result.replay_attempt or 1,
        replay=result.replay,
        status=result.status,
        error=result.error,
        http_status=result.http_status,
        at=result.at,
        duration_ms=result.duration_ms,
        trace_id=result.trace_id,
        http_attempts=report.attempt_log,
    )
    account_id = report.account_id or call.account_id
    key = call_row_key(account_id, call.conversation_id, call.call_id)
    row = session.exec(
        select(FailedCallRow).where(col(FailedCallRow.key) == key).with_for_update()
    ).first()
    if row is None:
        details = Details(
            call=call, tool_definition=report.tool, runtime_account=report.runtime_account
        )
        row = FailedCallRow(
            key=key,
            kind="call",
            state="failed",
            conversation_id=call.conversation_id,
            call_id=call.call_id,
            agent_id=call.agent_id,
            account_id=account_id,
            tool=call.tool,
            code="",
            message="",
            first_failed_at=run.at,
            last_at=run.at,
            details="",
        )
    else:
        details = _details(row)
        if any(known.attempt == run.attempt for known in details.runs):
            return  # a redelivered report
    details.runs = sorted([*details.runs, run], key=lambda known: known.attempt)
    latest = details.runs[-1]
    row.state = "replayed" if latest.status == "success" else "failed"
    row.code = latest.error.code.value if latest.error else "success"
    row.message = latest.error.message if latest.error else "The replay succeeded."
    row.http_status, row.trace_id, row.last_at = latest.http_status, latest.trace_id, latest.at
    row.replays = max(row.replays, latest.attempt - 1)
    row.last_attempt = latest.attempt
    row.details = details.model_dump_json()
    session.add(row)


def _dead_letter_row(key: str, letter: DeadLetter, fields: dict[str, Any]) -> FailedCallRow:
    def text(name: str) -> str | None:
        value = fields.get(name)
        return value if isinstance(value, str) else None

    now = utcnow()
    return FailedCallRow(
        key=key,
        kind="dead_letter",
        state="failed",
        conversation_id=text("conversation_id"),
        call_id=text("call_id"),
        agent_id=text("agent_id"),
        account_id=text("account_id"),
        tool=text("tool"),
        code=DEAD_LETTER_CODE,
        message=letter.reason,
        first_failed_at=now,
        last_at=now,
        details=Details(dead_letter=letter).model_dump_json(),
    )


def _filtered(query: Any, filters: Filters) -> Any:
    columns = {
        "agent_id": FailedCallRow.agent_id,
        "account_id": FailedCallRow.account_id,
        "tool": FailedCallRow.tool,
        "code": FailedCallRow.code,
        "call_id": FailedCallRow.call_id,
        "state": FailedCallRow.state,
    }
    if filters.ids is not None:
        query = query.where(col(FailedCallRow.id).in_(filters.ids))
    for name, column in columns.items():
        value = getattr(filters, name)
        if value is not None:
            query = query.where(col(column) == value)
    if filters.since is not None:
        query = query.where(col(FailedCallRow.last_at) >= filters.since)
    if filters.until is not None:
        query = query.where(col(FailedCallRow.last_at) < filters.until)
    return query


def _details(row: FailedCallRow) -> Details:
    # The tool was validated when it was declared; reading it back skips those checks.
    return Details.model_validate(json.loads(row.details), context=DECLARED_BEFORE)


def _summary(row: FailedCallRow) -> FailedCall:
    return FailedCall.model_validate(row, from_attributes=True)


def _detail(row: FailedCallRow) -> FailedCallDetail:
    return FailedCallDetail(**_summary(row).model_dump(), **dict(_details(row)))
