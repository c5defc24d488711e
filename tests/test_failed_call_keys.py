"""Failed calls are kept per account: rows stored before accounts were part of their key
are given it, in place, on SQLite and PostgreSQL."""

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from services.registry.failures import (
    FailedCallRow,
    FailureStore,
    call_row_key,
    upgrade_keys,
)
from shared.contract.events import CallRun, ErrorInfo, ToolCall, ToolCallResult, utcnow
from shared.process.storage import build_engine
from shared.settings import Settings


@pytest.fixture
def engine(database_url: str, tmp_path: Path) -> Iterator[Engine]:
    engine = build_engine(Settings(database_url=database_url, data_dir=tmp_path))
    yield engine
    engine.dispose()


def legacy_row(account_id: str | None, call_id: str) -> FailedCallRow:
    """A row as the version before stored it: keyed by conversation and call id alone."""
    digest = hashlib.sha256(f"conv-1\0{call_id}".encode()).hexdigest()
    now = utcnow()
    return FailedCallRow(
        key=f"call:{digest}",
        kind="call",
        state="failed",
        conversation_id="conv-1",
        call_id=call_id,
        agent_id="acme-bot",
        account_id=account_id,
        tool="Lookup",
        code="http_error",
        message="down",
        first_failed_at=now,
        last_at=now,
        details="{}",
    )


def run(account_id: str, call_id: str, attempt: int) -> CallRun:
    call = ToolCall(
        call_id=call_id, conversation_id="conv-1", agent_id=f"{account_id}-bot", tool="Lookup"
    )
    result = ToolCallResult(
        call_id=call_id,
        conversation_id="conv-1",
        tool="Lookup",
        status="error",
        error=ErrorInfo(code="http_error", message="down"),
        replay=attempt > 1,
        replay_attempt=attempt if attempt > 1 else None,
    )
    return CallRun(call=call, result=result, account_id=account_id)


def test_rows_keyed_before_accounts_get_their_account_and_keep_their_runs(
    engine: Engine,
) -> None:
    with Session(engine) as session:
        session.add(legacy_row("acme", "call-1"))
        session.add(legacy_row(None, "call-2"))  # a call that failed before it had an account
        session.commit()

    upgrade_keys(engine)
    upgrade_keys(engine)  # a second start changes nothing
    store = FailureStore(engine)
    store.record_runs([run("acme", "call-1", 2), run("globex", "call-1", 1)])

    digest = hashlib.sha256(b"conv-1\0call-1").hexdigest()
    with Session(engine) as session:
        rows = session.exec(select(FailedCallRow).order_by(col(FailedCallRow.id))).all()
    assert [(r.call_id, r.account_id, r.key) for r in rows] == [
        ("call-1", "acme", f"call:acme:{digest}"),
        ("call-2", None, call_row_key(None, "conv-1", "call-2")),
        # The same conversation and call ids in another account: a row of its own.
        ("call-1", "globex", f"call:globex:{digest}"),
    ]
    # acme's replay joined the row it always had.
    assert (rows[0].last_attempt, rows[0].replays) == (2, 1)
