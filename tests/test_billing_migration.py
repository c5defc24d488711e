"""A usage table made before replays (unique on ``call_id`` alone) upgraded in place.

The old table is made here as the previous ``UsageRow`` made it, on real
SQLite and PostgreSQL, and then opened with today's store.
"""

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from threading import Barrier
from typing import Any

import pytest
from sqlalchemy import (
    Column,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    event,
    inspect,
)
from sqlalchemy.exc import OperationalError

from services.billing.schema_upgrade import USAGE_TABLE, upgrade_schema
from services.billing.store import Totals, UsageStore
from shared.settings import Settings
from shared.storage import UtcDateTime, build_engine
from tests.factories import usage

# The shape ``usage_records`` had before replays: SQLModel's ``Field(unique=True)``
# is an unnamed UNIQUE (call_id), and the two indexes of ``__table_args__``.
OLD = MetaData()
Table(
    USAGE_TABLE,
    OLD,
    Column("id", Integer, primary_key=True),
    Column("call_id", String, nullable=False, unique=True),
    *(
        Column(name, String, nullable=False)
        for name in ("conversation_id", "agent_id", "account_id", "tool", "status")
    ),
    Column("input_tokens", Integer, nullable=False),
    Column("output_tokens", Integer, nullable=False),
    Column("units", Float, nullable=False),
    Column("duration_ms", Float, nullable=False),
    Column("at", UtcDateTime(), nullable=False),
    Index("ix_usage_records_account_at", "account_id", "at"),
    Index("ix_usage_records_conversation_at", "conversation_id", "at"),
)

ORIGINAL = usage("call-1")


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """A database holding the old table with one call, as the old billing left it."""
    settings = Settings(database_url=database_url, data_dir=tmp_path)
    old_engine = create_engine(settings.sqlalchemy_url())
    OLD.create_all(old_engine)
    with old_engine.begin() as connection:
        row = ORIGINAL.model_dump(exclude={"replay", "replay_attempt"})
        connection.execute(OLD.tables[USAGE_TABLE].insert(), row)
    old_engine.dispose()
    return settings


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    # build_engine's create_all makes the missing tables and leaves the old one as it is.
    engine = build_engine(settings)
    yield engine
    engine.dispose()


def test_the_old_table_is_the_one_the_store_opens(engine: Engine) -> None:
    # Guards the other tests: without the upgrade, this is what the store would meet.
    columns = {column["name"] for column in inspect(engine).get_columns(USAGE_TABLE)}

    assert "attempt" not in columns
    assert unique_keys(engine) == [["call_id"]]


def test_the_upgrade_keeps_the_rows_as_originals(engine: Engine) -> None:
    store = UsageStore(engine)

    summary = store.conversation("conv-42")
    assert summary is not None
    assert summary.calls == [ORIGINAL]
    assert (summary.calls[0].replay, summary.calls[0].replay_attempt) == (False, None)
    assert store.account_totals("acme") == Totals(
        calls=1, errors=0, replays=0, input_tokens=21, output_tokens=14, units=0.275
    )


def test_the_upgraded_table_is_keyed_on_call_and_attempt(engine: Engine) -> None:
    store = UsageStore(engine)

    assert store.record(usage("call-1")) is False
    assert store.record(usage("call-1", replay=True, replay_attempt=2)) is True
    assert store.record(usage("call-1", replay=True, replay_attempt=2)) is False
    assert store.record(usage("call-2")) is True
    assert store.account_totals("acme").model_dump(include={"calls", "replays"}) == {
        "calls": 3,
        "replays": 1,
    }


def test_the_upgraded_table_has_the_new_schema(engine: Engine) -> None:
    UsageStore(engine)

    inspector = inspect(engine)
    attempt = next(c for c in inspector.get_columns(USAGE_TABLE) if c["name"] == "attempt")
    assert attempt["nullable"] is False
    assert unique_keys(engine) == [["call_id", "attempt"]]
    assert {index["name"] for index in inspector.get_indexes(USAGE_TABLE)} >= {
        "ix_usage_records_account_at",
        "ix_usage_records_conversation_at",
    }


def test_opening_an_upgraded_table_again_changes_nothing(
    engine: Engine, settings: Settings
) -> None:
    UsageStore(engine).record(usage("call-1", replay=True, replay_attempt=2))

    another = build_engine(settings)
    try:
        again = UsageStore(another)
        assert again.account_totals("acme").calls == 2
        assert again.record(usage("call-1", replay=True, replay_attempt=2)) is False
    finally:
        another.dispose()
    assert unique_keys(engine) == [["call_id", "attempt"]]


def test_stores_starting_at_once_upgrade_the_table_once(settings: Settings) -> None:
    # Separate engines (separate connections), as separate billing processes would
    # have; upgrade_schema itself, since the store would retry a failed upgrade.
    engines = [build_engine(settings) for _ in range(4)]
    ready = Barrier(len(engines))

    def start(engine: Engine) -> None:
        ready.wait()
        upgrade_schema(engine)

    try:
        with ThreadPoolExecutor(max_workers=len(engines)) as pool:
            list(pool.map(start, engines))  # raises what any of them raised
        store = UsageStore(engines[0])
        assert store.account_totals("acme").calls == 1
        assert unique_keys(engines[0]) == [["call_id", "attempt"]]
    finally:
        for engine in engines:
            engine.dispose()


def unique_keys(engine: Engine) -> list[list[str]]:
    """The column lists of the table's unique constraints, whatever their names."""
    return sorted(c["column_names"] for c in inspect(engine).get_unique_constraints(USAGE_TABLE))


def test_an_upgrade_that_fails_half_way_leaves_the_old_table_and_is_tried_again(
    engine: Engine,
) -> None:
    def fail_at_the_last_step(_: Any, __: Any, statement: str, *___: Any) -> None:
        # Creating the indexes (SQLite) or the new key (PostgreSQL) comes last.
        if statement.startswith("CREATE INDEX") or "ADD CONSTRAINT" in statement:
            raise OperationalError(statement, None, Exception("the database went away"))

    event.listen(engine, "before_cursor_execute", fail_at_the_last_step)
    store = UsageStore(engine)  # a database failing at start does not stop the store
    event.remove(engine, "before_cursor_execute", fail_at_the_last_step)

    inspector = inspect(engine)
    assert f"{USAGE_TABLE}_upgrade" not in inspector.get_table_names()  # none left half-built
    assert "attempt" not in {column["name"] for column in inspector.get_columns(USAGE_TABLE)}
    assert unique_keys(engine) == [["call_id"]]
    # The next operation upgrades it.
    assert store.record(usage("call-1", replay=True, replay_attempt=2)) is True
    assert store.account_totals("acme").model_dump(include={"calls", "replays"}) == {
        "calls": 2,
        "replays": 1,
    }
