"""Where billing keeps usage: one row per call, and the conversations that ended.

Every write is idempotent on its natural key (``call_id``, ``conversation_id``)
through the database's own unique constraint, so redeliveries and several
billing replicas never count a call twice.
"""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime

from pydantic import BaseModel
from sqlalchemy import (
    Column,
    Connection,
    DateTime,
    Dialect,
    Engine,
    Index,
    Insert,
    Row,
    Select,
    case,
    func,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError
from sqlalchemy.sql import ColumnElement
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel, col

from shared.events import UsageRecord

# Units are priced to 6 decimals (shared.metering); sums are rounded back to that.
UNITS_DECIMALS = 6


class StoreUnavailable(Exception):
    """The database failed; the operation may succeed if tried again later."""


class RecordsRefused(Exception):
    """The database refused these values as they are (one it cannot hold): no retry helps."""


def as_utc(value: datetime) -> datetime:
    # The contract's times are UTC, so a time without an offset is read as UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware timestamp that reads back in UTC on SQLite and PostgreSQL.

    SQLite keeps no offset: it stores and compares the text as written, so every
    value (including query bounds) is converted to UTC on the way in.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        utc = as_utc(value)
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value)


class UsageRow(SQLModel, table=True):
    """One priced call, as the result-injector published it."""

    __tablename__ = "usage_records"
    __table_args__ = (
        Index("ix_usage_records_account_at", "account_id", "at"),
        Index("ix_usage_records_conversation_at", "conversation_id", "at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    call_id: str = Field(unique=True)
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
    """A conversation billing has heard the end of."""

    __tablename__ = "conversations"

    conversation_id: str = Field(primary_key=True)
    ended: bool = False
    ended_at: datetime | None = Field(default=None, sa_column=Column(UtcDateTime()))


class Totals(BaseModel):
    """Sums over a set of calls; ``errors`` counts the calls whose status is ``error``."""

    calls: int = 0
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    units: float = 0.0


class ConversationSummary(BaseModel):
    """What billing knows of one conversation: its calls in time order, and whether it ended."""

    conversation_id: str
    calls: list[UsageRecord]
    totals: Totals
    ended: bool


def totals_of(records: Sequence[UsageRecord]) -> Totals:
    """The same sums ``account_totals`` makes in SQL, over records already loaded."""
    return Totals(
        calls=len(records),
        errors=sum(record.status == "error" for record in records),
        input_tokens=sum(record.input_tokens for record in records),
        output_tokens=sum(record.output_tokens for record in records),
        units=round(sum(record.units for record in records), UNITS_DECIMALS),
    )


class UsageStore:
    """Usage records and conversation ends over a SQLite or PostgreSQL engine.

    Methods block: call them from a worker thread in async code. Database
    errors are raised as ``StoreUnavailable``.
    """

    def __init__(self, engine: Engine) -> None:
        if engine.dialect.name not in ("sqlite", "postgresql"):
            raise ValueError(f"billing stores to SQLite or PostgreSQL, not {engine.dialect.name}")
        self._engine = engine

    def record(self, usage: UsageRecord) -> bool:
        """Store one call's usage; False when that ``call_id`` was stored before."""
        return self.record_many([usage]) == 1

    def record_many(self, usages: Sequence[UsageRecord]) -> int:
        """Store calls' usage in one transaction; returns how many were new.

        A ``call_id`` stored before (or twice in ``usages``) is kept as first stored.
        """
        # One statement for any number of rows (compiled once, then cached), which
        # SQLAlchemy sends as multi-row INSERTs; rows come back only for what was
        # inserted (rowcount is not reliable across drivers with RETURNING).
        statement = self._insert_once(UsageRow, "call_id").returning(col(UsageRow.call_id))
        with self._transaction() as connection:
            inserted = connection.execute(statement, [u.model_dump() for u in usages]).all()
        return len(inserted)

    def end_conversation(self, conversation_id: str, at: datetime) -> None:
        """Mark a conversation ended; the first end heard is the one kept."""
        values = {"conversation_id": conversation_id, "ended": True, "ended_at": at}
        with self._transaction() as connection:
            connection.execute(self._insert_once(ConversationRow, "conversation_id"), values)

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

    def conversation(self, conversation_id: str) -> ConversationSummary | None:
        """A conversation's calls in time order, their totals and whether it ended."""
        calls = (
            select(UsageRow)
            .where(col(UsageRow.conversation_id) == conversation_id)
            .order_by(col(UsageRow.at), col(UsageRow.id))
        )
        ended = select(col(ConversationRow.ended)).where(
            col(ConversationRow.conversation_id) == conversation_id
        )
        with self._transaction() as connection:
            rows = connection.execute(calls).all()
            ended_flag = connection.execute(ended).scalar_one_or_none()
        if not rows and ended_flag is None:
            return None
        records = [UsageRecord.model_validate(row, from_attributes=True) for row in rows]
        return ConversationSummary(
            conversation_id=conversation_id,
            calls=records,
            totals=totals_of(records),
            ended=bool(ended_flag),
        )

    def _insert_once(self, table: type[SQLModel], key: str) -> Insert:
        # ON CONFLICT DO NOTHING leaves the decision to the unique constraint, so
        # concurrent writers (threads or replicas) cannot both insert.
        if self._engine.dialect.name == "postgresql":
            return postgresql.insert(table).on_conflict_do_nothing(index_elements=[key])
        return sqlite.insert(table).on_conflict_do_nothing(index_elements=[key])

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        try:
            with self._engine.begin() as connection:
                yield connection
        except (DataError, IntegrityError) as exc:
            # e.g. PostgreSQL holds no NUL in text: this record never fits, however often sent.
            raise RecordsRefused(f"the database refused the record: {exc.orig}") from exc
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"usage storage failed: {exc}") from exc


def _totals_query(where: list[ColumnElement[bool]]) -> Select[int, int, int, int, float]:
    return select(
        func.count(),
        func.coalesce(func.sum(case((col(UsageRow.status) == "error", 1), else_=0)), 0),
        func.coalesce(func.sum(col(UsageRow.input_tokens)), 0),
        func.coalesce(func.sum(col(UsageRow.output_tokens)), 0),
        func.coalesce(func.sum(col(UsageRow.units)), 0.0),
    ).where(*where)


def _totals_from(row: Row[int, int, int, int, float]) -> Totals:
    calls, errors, input_tokens, output_tokens, units = row
    return Totals(
        calls=calls,
        errors=errors,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        units=round(float(units), UNITS_DECIMALS),
    )
