"""Billing's tables made by an older billing, upgraded in place.

``usage_records`` comes in its two older shapes: made before replays (unique
on ``call_id`` alone, no ``attempt``) and before accounts (unique on
``(call_id, attempt)``); ``conversations`` keyed by ``conversation_id``. They
are made here as the previous models made them, on real SQLite and
PostgreSQL, and then opened with today's store.
"""

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from threading import Barrier
from typing import Any

import pytest
from sqlalchemy import (
    Boolean,
    Column,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    create_engine,
    event,
    inspect,
    text,
)
from sqlalchemy.exc import OperationalError

from services.billing.schema_upgrade import (
    CONVERSATIONS_TABLE,
    USAGE_KEY,
    USAGE_TABLE,
    upgrade_schema,
)
from services.billing.store import UsageStore
from services.billing.summaries import Totals
from shared.contract.events import UsageRecord
from shared.process.storage import UtcDateTime, build_engine
from shared.settings import Settings
from tests.factories import T0, usage


def old_tables(key: tuple[str, ...], key_name: str | None) -> MetaData:
    """The tables as an older billing made them, ``usage_records`` unique on ``key``.

    The indexes are those of ``__table_args__`` then, as now; ``attempt`` came with replays.
    """
    metadata = MetaData()
    attempt = Column("attempt", Integer, nullable=False, server_default=text("1"))
    Table(
        USAGE_TABLE,
        metadata,
        Column("id", Integer, primary_key=True),
        Column("call_id", String, nullable=False),
        *([attempt] if "attempt" in key else []),
        *(
            Column(name, String, nullable=False)
            for name in ("conversation_id", "agent_id", "account_id", "tool", "status")
        ),
        Column("input_tokens", Integer, nullable=False),
        Column("output_tokens", Integer, nullable=False),
        Column("units", Float, nullable=False),
        Column("duration_ms", Float, nullable=False),
        Column("at", UtcDateTime(), nullable=False),
        UniqueConstraint(*key, name=key_name),
        Index("ix_usage_records_account_at", "account_id", "at"),
        Index("ix_usage_records_conversation_at", "conversation_id", "at"),
    )
    Table(
        CONVERSATIONS_TABLE,
        metadata,
        Column("conversation_id", String, primary_key=True),
        Column("ended", Boolean, nullable=False),
        Column("ended_at", UtcDateTime()),
    )
    return metadata


@dataclass(frozen=True)
class Shape:
    """An older billing's tables, and the usage it left in them."""

    tables: MetaData
    key: list[str]
    rows: list[UsageRecord]


ORIGINAL = usage("call-1")
REPLAY = usage("call-1", replay=True, replay_attempt=2, at=T0 + timedelta(minutes=5))
SHAPES = {
    # SQLModel's ``Field(unique=True)`` is an unnamed UNIQUE (call_id).
    "before replays": Shape(old_tables(("call_id",), None), ["call_id"], [ORIGINAL]),
    "before accounts": Shape(
        old_tables(("call_id", "attempt"), "uq_usage_records_call_attempt"),
        ["call_id", "attempt"],
        [ORIGINAL, REPLAY],
    ),
}
# The shared runtime user's end of conv-42, as the old billing stored it.
OLD_END = {"conversation_id": "conv-42", "ended": True, "ended_at": T0 + timedelta(minutes=9)}


@pytest.fixture(params=list(SHAPES))
def shape(request: pytest.FixtureRequest) -> Shape:
    return SHAPES[request.param]


@pytest.fixture
def settings(database_url: str, tmp_path: Path, shape: Shape) -> Settings:
    """A database holding the old tables, with their rows, as the old billing left them."""
    settings = Settings(database_url=database_url, data_dir=tmp_path)
    old_engine = create_engine(settings.sqlalchemy_url())
    shape.tables.create_all(old_engine)
    usage_table = shape.tables.tables[USAGE_TABLE]
    with old_engine.begin() as connection:
        connection.execute(usage_table.insert(), [old_row(usage_table, r) for r in shape.rows])
        connection.execute(shape.tables.tables[CONVERSATIONS_TABLE].insert(), OLD_END)
    old_engine.dispose()
    return settings


def old_row(usage_table: Table, record: UsageRecord) -> dict[str, Any]:
    row = record.model_dump() | {"attempt": record.attempt}
    return {name: value for name, value in row.items() if name in usage_table.c}


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    # build_engine's create_all makes the missing tables and leaves the old ones as they are.
    engine = build_engine(settings)
    yield engine
    engine.dispose()


def test_the_old_tables_are_the_ones_the_store_opens(engine: Engine, shape: Shape) -> None:
    # Guards the other tests: without the upgrade, this is what the store would meet.
    assert unique_keys(engine) == [shape.key]
    assert conversation_key(engine) == ["conversation_id"]


def test_the_upgrade_keeps_every_row(engine: Engine, shape: Shape) -> None:
    store = UsageStore(engine)

    summary = store.conversation("conv-42", "acme")
    assert summary is not None
    assert (summary.calls, summary.ended) == (shape.rows, True)  # the originals are attempt 1
    calls = len(shape.rows)
    assert store.account_totals("acme") == Totals(
        calls=calls,
        replays=calls - 1,
        input_tokens=21 * calls,
        output_tokens=14 * calls,
        units=0.275 * calls,
    )


def test_an_old_end_is_the_shared_users_so_it_ended_the_conversation_in_every_account(
    engine: Engine,
) -> None:
    store = UsageStore(engine)

    assert ended(store, "conv-42", "globex") is None  # no calls there: unknown to it
    store.record(usage("call-9", account_id="globex"))

    assert ended(store, "conv-42", "globex") is True


def test_the_upgraded_table_takes_the_same_call_id_in_two_accounts_and_two_conversations(
    engine: Engine,
) -> None:
    store = UsageStore(engine)
    in_globex = usage("call-1", account_id="globex")
    in_conv_7 = usage("call-1", conversation_id="conv-7")
    third_run = usage("call-1", replay=True, replay_attempt=3)

    assert [store.record(r) for r in (in_globex, in_conv_7, third_run)] == [True, True, True]
    # The same run twice is still refused, old or new.
    assert [store.record(r) for r in (ORIGINAL, in_globex, in_conv_7, third_run)] == [False] * 4
    assert store.account_totals("globex").calls == 1
    conv_7 = store.conversation("conv-7", "acme")
    assert conv_7 is not None
    assert (conv_7.calls, conv_7.ended) == ([in_conv_7], False)


def test_the_upgraded_table_takes_ends_per_account(engine: Engine) -> None:
    store = UsageStore(engine)
    store.record(usage("call-1", conversation_id="conv-7", account_id="globex"))

    store.end_conversation("acme", "conv-7", T0)
    store.end_conversation("acme", "conv-7", T0 + timedelta(minutes=1))
    store.end_conversation(None, "conv-42", T0)  # the old end is kept, this one ignored

    assert (ended(store, "conv-7", "acme"), ended(store, "conv-7", "globex")) == (True, False)
    assert ended(store, "conv-42", "acme") is True


def test_the_upgraded_tables_have_the_new_schema(engine: Engine) -> None:
    UsageStore(engine)

    inspector = inspect(engine)
    attempt = next(c for c in inspector.get_columns(USAGE_TABLE) if c["name"] == "attempt")
    assert attempt["nullable"] is False
    assert unique_keys(engine) == [list(USAGE_KEY)]
    assert {index["name"] for index in inspector.get_indexes(USAGE_TABLE)} >= {
        "ix_usage_records_account_at",
        "ix_usage_records_conversation_at",
    }
    assert conversation_key(engine) == ["account_id", "conversation_id"]
    account = next(
        c for c in inspector.get_columns(CONVERSATIONS_TABLE) if c["name"] == "account_id"
    )
    assert account["nullable"] is False


def test_opening_upgraded_tables_again_changes_nothing(
    engine: Engine, settings: Settings, shape: Shape
) -> None:
    UsageStore(engine).record(usage("call-1", account_id="globex"))

    another = build_engine(settings)
    try:
        again = UsageStore(another)
        assert again.account_totals("acme").calls == len(shape.rows)
        assert again.record(usage("call-1", account_id="globex")) is False
    finally:
        another.dispose()
    assert unique_keys(engine) == [list(USAGE_KEY)]
    assert conversation_key(engine) == ["account_id", "conversation_id"]


def test_stores_starting_at_once_upgrade_the_tables_once(settings: Settings, shape: Shape) -> None:
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
        assert store.account_totals("acme").calls == len(shape.rows)
        assert ended(store, "conv-42", "acme") is True
        assert unique_keys(engines[0]) == [list(USAGE_KEY)]
        assert conversation_key(engines[0]) == ["account_id", "conversation_id"]
    finally:
        for engine in engines:
            engine.dispose()


def unique_keys(engine: Engine) -> list[list[str]]:
    """The column lists of the usage table's unique constraints, whatever their names."""
    return sorted(c["column_names"] for c in inspect(engine).get_unique_constraints(USAGE_TABLE))


def conversation_key(engine: Engine) -> list[str]:
    return inspect(engine).get_pk_constraint(CONVERSATIONS_TABLE)["constrained_columns"]


def ended(store: UsageStore, conversation_id: str, account_id: str) -> bool | None:
    """Whether the account's conversation ended; None when it is unknown to the account."""
    summary = store.conversation(conversation_id, account_id)
    return None if summary is None else summary.ended


def test_an_upgrade_that_fails_half_way_leaves_the_old_tables_and_is_tried_again(
    engine: Engine, shape: Shape
) -> None:
    def fail_at_the_last_step(_: Any, __: Any, statement: str, *___: Any) -> None:
        # The usage table's indexes (SQLite) or new key (PostgreSQL) come last.
        if statement.startswith("CREATE INDEX") or "ADD CONSTRAINT" in statement:
            raise OperationalError(statement, None, Exception("the database went away"))

    event.listen(engine, "before_cursor_execute", fail_at_the_last_step)
    store = UsageStore(engine)  # a database failing at start does not stop the store
    event.remove(engine, "before_cursor_execute", fail_at_the_last_step)

    tables = inspect(engine).get_table_names()
    assert not {f"{USAGE_TABLE}_upgrade", f"{CONVERSATIONS_TABLE}_upgrade"} & set(tables)
    assert unique_keys(engine) == [shape.key]
    assert conversation_key(engine) == ["conversation_id"]
    # The next operation upgrades them.
    assert store.record(usage("call-1", account_id="globex")) is True
    assert store.account_totals("acme").calls == len(shape.rows)
    assert ended(store, "conv-42", "acme") is True
