"""Where billing keeps usage: one row per run of a call, and the conversations that ended.

A conversation is one account's: the same conversation id used by two
accounts is two conversations. Every write is idempotent on its natural key
(``(account_id, conversation_id, call_id, attempt)``, ``(account_id,
conversation_id)``) through the database's own unique constraint, so
redeliveries and several billing replicas never count a run twice, while a
replay (attempt 2 and on) is billed beside the original.
"""

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Index,
    Insert,
    Row,
    Select,
    UniqueConstraint,
    case,
    func,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError
from sqlalchemy.sql import ColumnElement
from sqlmodel import Field, SQLModel, col

from services.billing.schema_upgrade import (
    CONVERSATION_KEY,
    CONVERSATIONS_TABLE,
    USAGE_KEY,
    USAGE_TABLE,
    upgrade_schema,
)
from services.billing.summaries import (
    SHARED_END,
    UNITS_DECIMALS,
    ConversationSummary,
    Totals,
    summary_of,
)
from shared.contract.events import UsageRecord
from shared.process.storage import UtcDateTime


class StoreUnavailable(Exception):
    """The database failed; the operation may succeed if tried again later."""


class RecordsRefused(Exception):
    """The database refused these values as they are (one it cannot hold): no retry helps."""


class UsageRow(SQLModel, table=True):
    """One priced run of a call (the original or a replay), as the result-injector published it."""

    __tablename__ = USAGE_TABLE
    __table_args__ = (
        # Named, so a new table and an upgraded one carry the same name.
        UniqueConstraint(*USAGE_KEY, name="uq_usage_records_account_conversation_call_attempt"),
        Index("ix_usage_records_account_at", "account_id", "at"),
        Index("ix_usage_records_conversation_at", "conversation_id", "at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    call_id: str
    # A server default too, so rows copied from an older table (or written by an
    # older replica during a rolling upgrade) are originals.
    attempt: int = Field(default=1, sa_column_kwargs={"server_default": text("1")})
    conversation_id: str
    agent_id: str
    account_id: str
    tool: str
    status: str
    input_tokens: int
    output_tokens: int
    units: float
    duration_ms: float
    at: datetime = Field(sa_column=Column(UtcDateTime(), nullable=False))


class ConversationRow(SQLModel, table=True):
    """A conversation billing has heard the end of: one account's, or (``SHARED_END``) every
    account's of that id."""

    __tablename__ = CONVERSATIONS_TABLE

    # A server default too, so rows copied from an older table (all from the
    # shared runtime user) are shared ends.
    account_id: str = Field(primary_key=True, sa_column_kwargs={"server_default": SHARED_END})
    conversation_id: str = Field(primary_key=True)
    ended: bool = False
    ended_at: datetime | None = Field(default=None, sa_column=Column(UtcDateTime()))


class UsageStore:
    """Usage records and conversation ends over a SQLite or PostgreSQL engine.

    Methods block: call them from a worker thread in async code. Database
    errors are raised as ``StoreUnavailable``.
    """

    def __init__(self, engine: Engine) -> None:
        if engine.dialect.name not in ("sqlite", "postgresql"):
            raise ValueError(f"billing stores to SQLite or PostgreSQL, not {engine.dialect.name}")
        self._engine = engine
        self._upgraded = False
        self._upgrade_lock = threading.Lock()
        # A database down at start is no reason to fail here: every operation
        # tries the upgrade first until it has been done.
        with suppress(StoreUnavailable):
            self._ensure_upgraded()

    def record(self, usage: UsageRecord) -> bool:
        """Store one run's usage; False when that run (``USAGE_KEY``) was stored before."""
        return self.record_many([usage]) == 1

    def record_many(self, usages: Sequence[UsageRecord]) -> int:
        """Store runs' usage in one transaction; returns how many were new.

        A run stored before (or twice in ``usages``) is kept as first stored; a
        replay is a new attempt, so it is stored beside the original.
        """
        # One statement for any number of rows (compiled once, then cached), which
        # SQLAlchemy sends as multi-row INSERTs; rows come back only for what was
        # inserted (rowcount is not reliable across drivers with RETURNING).
        statement = self._insert_once(UsageRow, USAGE_KEY).returning(col(UsageRow.call_id))
        with self._transaction() as connection:
            inserted = connection.execute(statement, [_row_of(u) for u in usages]).all()
        return len(inserted)

    def end_conversation(self, account_id: str | None, conversation_id: str, at: datetime) -> None:
        """Mark an account's conversation ended, or with no account (the shared runtime user's
        end) that conversation id in every account; the first end heard is the one kept."""
        values = {
            "account_id": SHARED_END if account_id is None else account_id,
            "conversation_id": conversation_id,
            "ended": True,
            "ended_at": at,
        }
        with self._transaction() as connection:
            connection.execute(self._insert_once(ConversationRow, CONVERSATION_KEY), values)

    def account_totals(
        self, account_id: str, since: datetime | None = None, until: datetime | None = None
    ) -> Totals:
        """Sums over an account's calls with ``since <= at < until`` (either bound optional)."""
        where = [col(UsageRow.account_id) == account_id]
        if since is not None:
            where.append(col(UsageRow.at) >= since)
        if until is not None:
            where.append(col(UsageRow.at) < until)
        with self._transaction() as connection:
            return _totals_from(connection.execute(_totals_query(where)).one())

    def conversation(
        self, conversation_id: str, account_id: str | None = None
    ) -> ConversationSummary | None:
        """An account's conversation, or with no account every account's calls of that id:
        the calls in time order, their totals and whether it ended (``summary_of``)."""
        calls = select(UsageRow).where(col(UsageRow.conversation_id) == conversation_id)
        ends = select(col(ConversationRow.account_id)).where(
            col(ConversationRow.conversation_id) == conversation_id
        )
        if account_id is not None:
            calls = calls.where(col(UsageRow.account_id) == account_id)
            ends = ends.where(col(ConversationRow.account_id).in_((account_id, SHARED_END)))
        with self._transaction() as connection:
            rows = connection.execute(calls.order_by(col(UsageRow.at), col(UsageRow.id))).all()
            ended_in = set(connection.execute(ends).scalars())
        records = [_record_of(row._asdict()) for row in rows]
        return summary_of(conversation_id, account_id, records, ended_in)

    def _insert_once(self, model: type[SQLModel], key: Sequence[str]) -> Insert:
        # ON CONFLICT DO NOTHING leaves the decision to the unique constraint, so
        # concurrent writers (threads or replicas) cannot both insert.
        if self._engine.dialect.name == "postgresql":
            return postgresql.insert(model).on_conflict_do_nothing(index_elements=list(key))
        return sqlite.insert(model).on_conflict_do_nothing(index_elements=list(key))

    def _ensure_upgraded(self) -> None:
        # A flag read once the upgrade is done; the lock keeps threads from racing it.
        if self._upgraded:
            return
        with self._upgrade_lock:
            if self._upgraded:
                return
            try:
                upgrade_schema(self._engine)
            except SQLAlchemyError as exc:
                raise StoreUnavailable(f"usage storage upgrade failed: {exc}") from exc
            self._upgraded = True

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        self._ensure_upgraded()
        try:
            with self._engine.begin() as connection:
                yield connection
        except (DataError, IntegrityError) as exc:
            # e.g. PostgreSQL holds no NUL in text: this record never fits, however often sent.
            raise RecordsRefused(f"the database refused the record: {exc.orig}") from exc
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"usage storage failed: {exc}") from exc


# The record's fields stored as they are; the replay flags become ``attempt``.
_STORED_FIELDS = (set(UsageRecord.model_fields) & set(UsageRow.model_fields)) - {"id", "attempt"}


def _row_of(usage: UsageRecord) -> dict[str, Any]:
    return usage.model_dump(include=_STORED_FIELDS) | {"attempt": usage.attempt}


def _record_of(row: dict[str, Any]) -> UsageRecord:
    # Attempt 1 is the original, read back as no replay at all.
    attempt = row["attempt"]
    replay = {"replay": attempt > 1, "replay_attempt": attempt if attempt > 1 else None}
    return UsageRecord.model_validate(row | replay)


def _totals_query(where: list[ColumnElement[bool]]) -> Select[int, int, int, int, int, float]:
    return select(
        func.count(),
        func.coalesce(func.sum(case((col(UsageRow.status) == "error", 1), else_=0)), 0),
        func.coalesce(func.sum(case((col(UsageRow.attempt) > 1, 1), else_=0)), 0),
        func.coalesce(func.sum(col(UsageRow.input_tokens)), 0),
        func.coalesce(func.sum(col(UsageRow.output_tokens)), 0),
        func.coalesce(func.sum(col(UsageRow.units)), 0.0),
    ).where(*where)


def _totals_from(row: Row[int, int, int, int, int, float]) -> Totals:
    calls, errors, replays, input_tokens, output_tokens, units = row
    return Totals(
        calls=calls,
        errors=errors,
        replays=replays,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        units=round(float(units), UNITS_DECIMALS),
    )
