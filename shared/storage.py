"""SQL engines for the services that store things (registry, billing)."""

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, Dialect, Engine, event
from sqlalchemy.types import TypeDecorator
from sqlmodel import SQLModel, create_engine

from shared.settings import Settings


def build_engine(settings: Settings) -> Engine:
    url = settings.sqlalchemy_url()
    if url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(url, pool_pre_ping=True, pool_size=10)
    SQLModel.metadata.create_all(engine)
    return engine


def _sqlite_pragmas(connection: Any, _: Any) -> None:
    # WAL lets readers (REST) and the writer (consumers) work at once.
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


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
