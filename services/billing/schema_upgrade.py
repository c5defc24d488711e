"""Upgrading a ``usage_records`` table made by an older billing, in place.

Before replays, ``usage_records`` was unique on ``call_id`` alone and had no
``attempt``. ``create_all`` leaves an existing table as it is, so the store
upgrades it once, in one transaction that a second process waits for.
"""

from sqlalchemy import (
    Connection,
    Engine,
    MetaData,
    UniqueConstraint,
    column,
    insert,
    inspect,
    literal,
    select,
    table,
)
from sqlalchemy.schema import AddConstraint, CreateTable
from sqlmodel import SQLModel

USAGE_TABLE = "usage_records"
# One row per run of a call: the original is attempt 1, replays 2 and on.
USAGE_KEY = ("call_id", "attempt")


def upgrade_schema(engine: Engine) -> None:
    """Give an older ``usage_records`` its ``attempt`` column and ``(call_id, attempt)`` key.

    Idempotent: one look at the table's columns when there is nothing to do.
    """
    if not _needs_upgrade(engine):
        return
    if engine.dialect.name == "sqlite":
        _upgrade_sqlite(engine)
    else:
        _upgrade_postgresql(engine)


def _needs_upgrade(bind: Engine | Connection) -> bool:
    inspector = inspect(bind)
    if not inspector.has_table(USAGE_TABLE):
        return False  # not created yet: create_all will make it new
    return "attempt" not in {column["name"] for column in inspector.get_columns(USAGE_TABLE)}


def _upgrade_sqlite(engine: Engine) -> None:
    # SQLite cannot change a table's constraints: it is rebuilt (the documented
    # recipe). pysqlite would begin the transaction only at the first INSERT,
    # leaving the CREATE outside it; BEGIN IMMEDIATE takes the write lock up
    # front, so a second process waits (busy_timeout) and then finds it done.
    with engine.connect() as connection:
        connection.exec_driver_sql("BEGIN IMMEDIATE")
        if _needs_upgrade(connection):
            _rebuild_sqlite_table(connection)
        connection.commit()


def _rebuild_sqlite_table(connection: Connection) -> None:
    staging = f"{USAGE_TABLE}_upgrade"
    new = SQLModel.metadata.tables[USAGE_TABLE].to_metadata(MetaData(), name=staging)
    old_columns = [column["name"] for column in inspect(connection).get_columns(USAGE_TABLE)]
    copied = [name for name in old_columns if name in new.c]
    old = table(USAGE_TABLE, *(column(name) for name in copied))
    # CreateTable leaves the indexes out: their names are still the old table's.
    connection.execute(CreateTable(new))
    every_row_an_original = select(*(old.c[name] for name in copied), literal(1))
    connection.execute(insert(new).from_select([*copied, "attempt"], every_row_an_original))
    connection.exec_driver_sql(f"DROP TABLE {USAGE_TABLE}")
    connection.exec_driver_sql(f"ALTER TABLE {staging} RENAME TO {USAGE_TABLE}")
    for index in SQLModel.metadata.tables[USAGE_TABLE].indexes:
        index.create(connection)


def _upgrade_postgresql(engine: Engine) -> None:
    # Taken first, the lock ALTER TABLE would take anyway makes a second process
    # wait here, then find the work done (READ COMMITTED: it sees the commit).
    with engine.begin() as connection:
        connection.exec_driver_sql(f"LOCK TABLE {USAGE_TABLE} IN ACCESS EXCLUSIVE MODE")
        if not _needs_upgrade(connection):
            return
        old_keys = [
            constraint["name"]
            for constraint in inspect(connection).get_unique_constraints(USAGE_TABLE)
            if constraint["column_names"] == ["call_id"] and constraint["name"]
        ]
        # Metadata only since PostgreSQL 11: existing rows read the default, no rewrite.
        connection.exec_driver_sql(
            f"ALTER TABLE {USAGE_TABLE} ADD COLUMN attempt INTEGER DEFAULT 1 NOT NULL"
        )
        quote = connection.dialect.identifier_preparer.quote
        for name in old_keys:
            connection.exec_driver_sql(f"ALTER TABLE {USAGE_TABLE} DROP CONSTRAINT {quote(name)}")
        # Not isolated: the model's constraint must still be created inline by create_all.
        connection.execute(AddConstraint(_usage_key(), isolate_from_table=False))


def _usage_key() -> UniqueConstraint:
    return next(
        constraint
        for constraint in SQLModel.metadata.tables[USAGE_TABLE].constraints
        if isinstance(constraint, UniqueConstraint)
        and [column.name for column in constraint.columns] == list(USAGE_KEY)
    )
