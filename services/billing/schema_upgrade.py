"""Upgrading billing's tables, made by an older billing, in place.

``create_all`` leaves an existing table as it is, so the store upgrades each
older one once, in one transaction that a second process waits for:

- ``usage_records`` was unique on ``call_id`` alone, without ``attempt``
  (before replays), then on ``(call_id, attempt)`` (before accounts). Runtimes
  choose call ids, so two accounts, or two conversations, may use the same
  one: a run is now ``(account_id, conversation_id, call_id, attempt)``.
- ``conversations`` was keyed by ``conversation_id``; now by
  ``(account_id, conversation_id)``. Its rows were ends from the shared
  runtime user, and stay so (account ``""``).
"""

from collections.abc import Callable

from sqlalchemy import (
    Connection,
    Engine,
    Inspector,
    MetaData,
    UniqueConstraint,
    column,
    insert,
    inspect,
    select,
    table,
)
from sqlalchemy.schema import AddConstraint, CreateColumn, CreateTable
from sqlmodel import SQLModel

USAGE_TABLE = "usage_records"
# One row per run of a call in one account's conversation: the original is
# attempt 1, replays 2 and on.
USAGE_KEY = ("account_id", "conversation_id", "call_id", "attempt")
# The keys it had before replays, and before accounts.
OLD_USAGE_KEYS = (["call_id"], ["call_id", "attempt"])
CONVERSATIONS_TABLE = "conversations"
CONVERSATION_KEY = ("account_id", "conversation_id")


def upgrade_schema(engine: Engine) -> None:
    """Give older ``conversations`` and ``usage_records`` tables today's keys.

    Idempotent: one look at each table's key when there is nothing to do.
    """
    if not _outdated(engine):
        return
    if engine.dialect.name == "sqlite":
        _upgrade_sqlite(engine)
    else:
        _upgrade_postgresql(engine)


def _outdated(bind: Engine | Connection) -> list[str]:
    """The tables of an older shape, always in the same order."""
    inspector = inspect(bind)
    # A table not there yet is not outdated: create_all will make it new.
    return [
        name
        for name, is_current in _CURRENT.items()
        if inspector.has_table(name) and not is_current(inspector)
    ]


def _conversations_are_current(inspector: Inspector) -> bool:
    key = inspector.get_pk_constraint(CONVERSATIONS_TABLE)["constrained_columns"]
    return key == list(CONVERSATION_KEY)


def _usage_is_current(inspector: Inspector) -> bool:
    keys = [c["column_names"] for c in inspector.get_unique_constraints(USAGE_TABLE)]
    return list(USAGE_KEY) in keys


def _upgrade_sqlite(engine: Engine) -> None:
    # SQLite cannot change a table's key: it is rebuilt (the documented recipe).
    # pysqlite would begin the transaction only at the first INSERT, leaving the
    # CREATE outside it; BEGIN IMMEDIATE takes the write lock up front, so a
    # second process waits (busy_timeout) and then finds it done.
    with engine.connect() as connection:
        connection.exec_driver_sql("BEGIN IMMEDIATE")
        for name in _outdated(connection):
            _rebuild_sqlite_table(connection, name)
        connection.commit()


def _rebuild_sqlite_table(connection: Connection, name: str) -> None:
    staging = f"{name}_upgrade"
    model = SQLModel.metadata.tables[name]
    new = model.to_metadata(MetaData(), name=staging)
    old_columns = [column["name"] for column in inspect(connection).get_columns(name)]
    copied = [column_name for column_name in old_columns if column_name in new.c]
    old = table(name, *(column(column_name) for column_name in copied))
    # CreateTable leaves the indexes out: their names are still the old table's.
    connection.execute(CreateTable(new))
    # A column the old table lacks takes its server default, which keeps the
    # row's meaning: attempt 1 (an original), account "" (a shared end).
    connection.execute(insert(new).from_select(copied, select(*old.c)))
    connection.exec_driver_sql(f"DROP TABLE {name}")
    connection.exec_driver_sql(f"ALTER TABLE {staging} RENAME TO {name}")
    for index in model.indexes:
        index.create(connection)


def _upgrade_postgresql(engine: Engine) -> None:
    # Taken first, the locks ALTER TABLE would take anyway make a second process
    # wait here, then find the work done (READ COMMITTED: it sees the commit).
    # One statement, in _outdated's order: two processes never hold each other's.
    with engine.begin() as connection:
        outdated = _outdated(connection)
        if not outdated:
            return
        connection.exec_driver_sql(f"LOCK TABLE {', '.join(outdated)} IN ACCESS EXCLUSIVE MODE")
        for name in _outdated(connection):
            _REKEY_POSTGRESQL[name](connection)


def _rekey_conversations_postgresql(connection: Connection) -> None:
    old_key = inspect(connection).get_pk_constraint(CONVERSATIONS_TABLE)["name"]
    _add_column(connection, CONVERSATIONS_TABLE, "account_id")  # "" for the rows there
    if old_key is not None:  # a table without a key has none to drop
        _drop_constraint(connection, CONVERSATIONS_TABLE, old_key)
    new_key = SQLModel.metadata.tables[CONVERSATIONS_TABLE].primary_key
    connection.execute(AddConstraint(new_key, isolate_from_table=False))


def _rekey_usage_postgresql(connection: Connection) -> None:
    inspector = inspect(connection)
    old_keys = [
        constraint["name"]
        for constraint in inspector.get_unique_constraints(USAGE_TABLE)
        if constraint["column_names"] in OLD_USAGE_KEYS and constraint["name"]
    ]
    if "attempt" not in {column["name"] for column in inspector.get_columns(USAGE_TABLE)}:
        # Metadata only since PostgreSQL 11: existing rows read the default, no rewrite.
        _add_column(connection, USAGE_TABLE, "attempt")
    for name in old_keys:
        _drop_constraint(connection, USAGE_TABLE, name)
    # Not isolated: the model's constraint must still be created inline by create_all.
    connection.execute(AddConstraint(_usage_key(), isolate_from_table=False))


def _add_column(connection: Connection, table_name: str, name: str) -> None:
    # As the model declares it (type, server default, NOT NULL), so an upgraded
    # table is the one create_all would make.
    model_column = SQLModel.metadata.tables[table_name].c[name]
    specification = CreateColumn(model_column).compile(dialect=connection.dialect)
    connection.exec_driver_sql(f"ALTER TABLE {table_name} ADD COLUMN {specification}")


def _drop_constraint(connection: Connection, table_name: str, name: str) -> None:
    quote = connection.dialect.identifier_preparer.quote
    connection.exec_driver_sql(f"ALTER TABLE {table_name} DROP CONSTRAINT {quote(name)}")


def _usage_key() -> UniqueConstraint:
    return next(
        constraint
        for constraint in SQLModel.metadata.tables[USAGE_TABLE].constraints
        if isinstance(constraint, UniqueConstraint)
        and [column.name for column in constraint.columns] == list(USAGE_KEY)
    )


_CURRENT: dict[str, Callable[[Inspector], bool]] = {
    CONVERSATIONS_TABLE: _conversations_are_current,
    USAGE_TABLE: _usage_is_current,
}
_REKEY_POSTGRESQL: dict[str, Callable[[Connection], None]] = {
    CONVERSATIONS_TABLE: _rekey_conversations_postgresql,
    USAGE_TABLE: _rekey_usage_postgresql,
}
