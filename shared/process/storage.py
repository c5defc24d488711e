"""SQL engines for the services that store things (registry, billing)."""

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, Dialect, Engine, event, make_url
from sqlalchemy.types import TypeDecorator
from sqlmodel import SQLModel, create_engine

from shared.security.data_dir import private_dir, private_sqlite
from shared.settings import Settings


def build_engine(settings: Settings) -> Engine:
    url = settings.sqlalchemy_url()
    if url.startswith("sqlite"):
        engine = _sqlite_engine(url, settings.data_dir)
    else:
        engine = create_engine(url, pool_pre_ping=True, pool_size=10)
    SQLModel.metadata.create_all(engine)
    return engine


def _sqlite_engine(url: str, data_dir: Path) -> Engine:
    private_dir(data_dir)
    database = make_url(url).database
    if database and database != ":memory:":  # a file: private before SQLite first opens it
        private_sqlite(Path(database))
    engine = create_engine(url, connect_args={"check_same_thread": False})
    event.listen(engine, "connect", _sqlite_pragmas)
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
