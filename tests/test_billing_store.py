"""UsageStore against real SQLite and PostgreSQL: once-only records and SQL aggregates."""

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import create_engine

from services.billing.store import StoreUnavailable, UsageStore
from services.billing.summaries import Totals, totals_of
from shared.contract.events import UsageRecord
from shared.process.storage import build_engine
from shared.settings import Settings
from tests.factories import T0, usage


def replay(call_id: str, attempt: int, **fields: Any) -> UsageRecord:
    """A usage record of ops running ``call_id`` again (attempt 2 is the first replay)."""
    return usage(call_id, replay=True, replay_attempt=attempt, **fields)


@pytest.fixture
def store(database_url: str, tmp_path: Path) -> Iterator[UsageStore]:
    engine = build_engine(Settings(database_url=database_url, data_dir=tmp_path))
    yield UsageStore(engine)
    engine.dispose()


def test_a_call_is_recorded_once(store: UsageStore) -> None:
    assert store.record(usage("call-1")) is True

    assert store.record(usage("call-1")) is False
    assert store.record(usage("call-1", input_tokens=999, units=9.0)) is False
    assert store.account_totals("acme") == Totals(
        calls=1, errors=0, input_tokens=21, output_tokens=14, units=0.275
    )


def test_a_batch_stores_each_new_call_once_and_keeps_what_was_stored_before(
    store: UsageStore,
) -> None:
    store.record(usage("call-1", input_tokens=1))
    batch = [
        usage("call-1", input_tokens=100),  # stored before: kept as it was
        usage("call-2", input_tokens=2),
        usage("call-2", input_tokens=200),  # twice in one batch: the first wins
        usage("call-3", input_tokens=3),
    ]

    assert store.record_many(batch) == 2
    assert store.account_totals("acme").input_tokens == 1 + 2 + 3
    assert store.record_many(batch) == 0


def test_concurrent_writers_of_one_call_store_it_once(store: UsageStore) -> None:
    # Separate connections racing on one call_id, as several replicas would.
    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(lambda _: store.record(usage("call-1")), range(16)))

    assert outcomes.count(True) == 1
    assert store.account_totals("acme").calls == 1


def test_account_totals_sum_calls_errors_tokens_and_units(store: UsageStore) -> None:
    store.record(usage("call-1", input_tokens=10, output_tokens=5, units=0.1))
    store.record(usage("call-2", status="error", input_tokens=7, output_tokens=0, units=0.2))
    store.record(usage("call-3", status="error", input_tokens=1, output_tokens=2, units=0.3))
    store.record(usage("call-4", account_id="other", input_tokens=100, units=5.0))

    assert store.account_totals("acme") == Totals(
        calls=3, errors=2, input_tokens=18, output_tokens=7, units=0.6
    )
    assert store.account_totals("nobody") == Totals()


def test_since_is_inclusive_and_until_exclusive(store: UsageStore) -> None:
    for minute in range(4):
        store.record(usage(f"call-{minute}", at=T0 + timedelta(minutes=minute)))

    def calls(since: datetime | None, until: datetime | None) -> int:
        return store.account_totals("acme", since, until).calls

    assert calls(T0 + timedelta(minutes=1), None) == 3
    assert calls(None, T0 + timedelta(minutes=1)) == 1
    assert calls(T0 + timedelta(minutes=1), T0 + timedelta(minutes=3)) == 2
    assert calls(T0 + timedelta(minutes=3), T0 + timedelta(minutes=3)) == 0


def test_times_in_other_offsets_compare_as_the_same_instant(store: UsageStore) -> None:
    paris = timezone(timedelta(hours=1))
    store.record(usage("call-1", at=datetime(2026, 11, 21, 11, 0, tzinfo=paris)))  # 10:00Z

    assert store.account_totals("acme", since=datetime(2026, 11, 21, 10, 0, tzinfo=UTC)).calls == 1
    assert (
        store.account_totals("acme", until=datetime(2026, 11, 21, 11, 0, tzinfo=paris)).calls == 0
    )
    summary = store.conversation("conv-42")
    assert summary is not None
    assert summary.calls[0].at == datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
    assert summary.calls[0].at.utcoffset() == timedelta(0)


def test_conversation_summary_lists_its_calls_in_time_order(store: UsageStore) -> None:
    late = usage("call-late", at=T0 + timedelta(seconds=5), status="error", units=0.1)
    early = usage("call-early", at=T0, input_tokens=3, output_tokens=4, units=0.135)
    store.record(late)
    store.record(early)
    store.record(usage("call-elsewhere", conversation_id="conv-7"))

    summary = store.conversation("conv-42")

    assert summary is not None
    assert summary.model_dump(mode="json") == {
        "conversation_id": "conv-42",
        "account_id": None,
        "calls": [early.model_dump(mode="json"), late.model_dump(mode="json")],
        "totals": {
            "calls": 2,
            "errors": 1,
            "replays": 0,
            "input_tokens": 24,
            "output_tokens": 18,
            "units": 0.235,
        },
        "ended": False,
    }


def test_ending_a_conversation_is_idempotent(store: UsageStore) -> None:
    store.record(usage("call-1"))

    store.end_conversation(None, "conv-42", T0)
    store.end_conversation(None, "conv-42", T0 + timedelta(minutes=1))

    summary = store.conversation("conv-42")
    assert summary is not None
    assert summary.ended is True
    assert summary.totals.calls == 1


def test_a_conversation_known_only_by_its_end_has_no_calls(store: UsageStore) -> None:
    store.end_conversation(None, "conv-quiet", T0)

    summary = store.conversation("conv-quiet")

    assert summary is not None
    assert (summary.calls, summary.totals, summary.ended) == ([], Totals(), True)


def test_an_unknown_conversation_is_none(store: UsageStore) -> None:
    store.record(usage("call-1"))

    assert store.conversation("conv-unknown") is None


def test_a_database_failure_is_store_unavailable(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'missing' / 'midcall.db'}")
    store = UsageStore(engine)

    with pytest.raises(StoreUnavailable):
        store.record(usage("call-1"))
    with pytest.raises(StoreUnavailable):
        store.account_totals("acme")


# -- replays: each attempt billed once, beside the original -----------------------------------


def test_a_replay_is_stored_beside_the_original(store: UsageStore) -> None:
    assert store.record(usage("call-1")) is True

    assert store.record(replay("call-1", 2)) is True
    assert store.record(replay("call-1", 3)) is True
    assert store.account_totals("acme") == Totals(
        calls=3, errors=0, replays=2, input_tokens=63, output_tokens=42, units=0.825
    )


def test_the_same_attempt_twice_is_stored_once(store: UsageStore) -> None:
    store.record(usage("call-1"))
    store.record(replay("call-1", 2, input_tokens=1))

    assert store.record(replay("call-1", 2, input_tokens=999)) is False
    assert store.record(usage("call-1", input_tokens=999)) is False
    # In one batch too: the first of each attempt wins, stored ones are kept.
    batch = [replay("call-1", 2), replay("call-1", 3, input_tokens=3), replay("call-1", 3)]
    assert store.record_many(batch) == 1
    assert store.account_totals("acme").input_tokens == 21 + 1 + 3


def test_a_replay_flag_without_an_attempt_is_the_original(store: UsageStore) -> None:
    # The attempt is the key: ``replay`` alone names no new run to bill.
    store.record(usage("call-1"))

    assert store.record(usage("call-1", replay=True)) is False


def test_totals_count_replays_among_calls_and_apart(store: UsageStore) -> None:
    store.record(usage("call-1", input_tokens=10, output_tokens=5, units=0.1))
    store.record(replay("call-1", 2, status="error", input_tokens=7, output_tokens=0, units=0.2))
    store.record(usage("call-2", input_tokens=1, output_tokens=2, units=0.3))
    store.record(replay("call-3", 2, input_tokens=4, units=0.4))  # the original never billed here
    store.record(replay("call-4", 2, account_id="other", units=5.0))

    expected = Totals(calls=4, errors=1, replays=2, input_tokens=22, output_tokens=21, units=1.0)
    assert store.account_totals("acme") == expected
    # The SQL sums and the ones made over loaded records agree.
    summary = store.conversation("conv-42")
    assert summary is not None
    assert totals_of([c for c in summary.calls if c.account_id == "acme"]) == expected


def test_the_conversation_lists_the_original_and_its_replays_with_their_flags(
    store: UsageStore,
) -> None:
    original = usage("call-1", at=T0, status="error")
    again = replay("call-1", 2, at=T0 + timedelta(minutes=5))
    store.record(again)
    store.record(original)

    summary = store.conversation("conv-42")

    assert summary is not None
    assert summary.calls == [original, again]
    assert [(c.replay, c.replay_attempt, c.attempt) for c in summary.calls] == [
        (False, None, 1),
        (True, 2, 2),
    ]
    assert (summary.totals.calls, summary.totals.errors, summary.totals.replays) == (2, 1, 1)


# -- accounts: a conversation id used by two accounts is two conversations --------------------


def test_the_same_call_id_in_two_accounts_or_two_conversations_is_two_calls(
    store: UsageStore,
) -> None:
    # Runtimes choose call ids: nothing keeps two of them from choosing the same.
    runs = [
        usage("call-1"),
        usage("call-1", account_id="globex"),
        usage("call-1", conversation_id="conv-7"),
        replay("call-1", 2, account_id="globex"),
    ]

    assert [store.record(run) for run in runs] == [True] * 4
    assert [store.record(run) for run in runs] == [False] * 4
    assert store.record_many([*runs, usage("call-1", account_id="initech")]) == 1
    assert (store.account_totals("acme").calls, store.account_totals("globex").calls) == (2, 2)


def test_an_accounts_conversation_has_its_calls_only(store: UsageStore) -> None:
    ours, theirs = usage("call-1", at=T0), usage("call-1", account_id="globex", at=T0)
    store.record_many([ours, theirs, usage("call-2", conversation_id="conv-7")])

    summary = store.conversation("conv-42", "acme")

    assert summary is not None
    assert summary.model_dump(mode="json") == {
        "conversation_id": "conv-42",
        "account_id": "acme",
        "calls": [ours.model_dump(mode="json")],
        "totals": {
            "calls": 1,
            "errors": 0,
            "replays": 0,
            "input_tokens": 21,
            "output_tokens": 14,
            "units": 0.275,
        },
        "ended": False,
    }
    assert store.conversation("conv-42", "initech") is None


def test_an_accounts_end_ends_its_conversation_only(store: UsageStore) -> None:
    store.record_many([usage("call-1"), usage("call-1", account_id="globex")])

    store.end_conversation("acme", "conv-42", T0)
    store.end_conversation("acme", "conv-42", T0 + timedelta(minutes=1))  # kept once

    assert ended_in(store, "conv-42") == {"acme": True, "globex": False, "initech": None}
    # Every account's calls of that id: ended once each of their conversations has.
    assert ended(store, "conv-42") is False
    store.end_conversation("globex", "conv-42", T0)
    assert ended(store, "conv-42") is True


def test_a_shared_end_ends_that_conversation_id_in_every_account(store: UsageStore) -> None:
    store.record_many([usage("call-1"), usage("call-1", account_id="globex")])

    store.end_conversation(None, "conv-42", T0)

    assert ended_in(store, "conv-42") == {"acme": True, "globex": True, "initech": None}
    assert ended(store, "conv-42") is True


def test_an_accounts_own_end_makes_its_conversation_known_a_shared_one_does_not(
    store: UsageStore,
) -> None:
    # A shared end says nothing of whether an account had that conversation.
    store.end_conversation(None, "conv-shared", T0)
    store.end_conversation("acme", "conv-quiet", T0)

    assert ended_in(store, "conv-shared") == {"acme": None, "globex": None, "initech": None}
    assert ended_in(store, "conv-quiet") == {"acme": True, "globex": None, "initech": None}
    for conversation_id in ("conv-shared", "conv-quiet"):
        summary = store.conversation(conversation_id)  # every account's: the ends are known
        assert summary is not None
        assert (summary.account_id, summary.calls, summary.ended) == (None, [], True)


def ended(store: UsageStore, conversation_id: str, account_id: str | None = None) -> bool | None:
    """Whether the conversation (of every account, or of one) ended; None when it is unknown."""
    summary = store.conversation(conversation_id, account_id)
    return None if summary is None else summary.ended


def ended_in(store: UsageStore, conversation_id: str) -> dict[str, bool | None]:
    """``ended`` per account: acme, globex, and initech, which has no calls anywhere."""
    return {a: ended(store, conversation_id, a) for a in ("acme", "globex", "initech")}
