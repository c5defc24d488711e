"""Riding out NATS being away (shared.fabric.outages): tries that go unanswered are cut short."""

import asyncio
import gc
from typing import Any

import nats.errors
import pytest

from shared.fabric import outages
from shared.fabric.outages import patiently


async def test_a_try_left_unanswered_is_cut_and_the_next_ones_are_short(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As a stream with no leader does: requests dropped, never answered, until one is.
    monkeypatch.setattr(outages, "FIRST_TRY_S", 0.5)
    monkeypatch.setattr(outages, "RETRY_S", 0.05)
    monkeypatch.setattr(outages, "MAX_DELAY_S", 0.01)
    cut: list[float] = []
    loop = asyncio.get_running_loop()

    async def attempt() -> str:
        started = loop.time()
        if len(cut) < 3:
            try:
                await asyncio.Event().wait()  # never answered
            except asyncio.CancelledError:
                cut.append(loop.time() - started)
                raise
        return "stored"

    assert await patiently(attempt, 10) == "stored"
    assert len(cut) == 3
    assert cut[0] >= 0.5  # the first try: as long as a loaded server may need
    assert all(0.05 <= took < 0.45 for took in cut[1:])  # then short ones


async def test_an_attempt_given_its_own_try_length_keeps_it_after_a_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A watch (several requests in one attempt) on a loaded server: never cut to RETRY_S.
    monkeypatch.setattr(outages, "FIRST_TRY_S", 0.2)
    monkeypatch.setattr(outages, "RETRY_S", 0.01)
    monkeypatch.setattr(outages, "MAX_DELAY_S", 0.01)
    took: list[float] = []
    loop = asyncio.get_running_loop()

    async def attempt() -> str:
        started = loop.time()
        if not took:
            took.append(0.0)
            raise nats.errors.NoRespondersError  # the outage
        await asyncio.sleep(0.1)  # longer than RETRY_S, within its own length
        took.append(loop.time() - started)
        return "watching"

    assert await patiently(attempt, 2, retry_s=0.2) == "watching"
    assert took[1] >= 0.1


async def test_a_failure_that_is_not_an_outage_is_raised_at_once() -> None:
    tries = 0

    async def attempt() -> None:
        nonlocal tries
        tries += 1
        raise ValueError("a bug, not an outage")

    with pytest.raises(ValueError, match="a bug"):
        await patiently(attempt, 10)
    assert tries == 1


async def test_an_outage_longer_than_the_patience_is_raised() -> None:
    async def attempt() -> None:
        raise nats.errors.NoRespondersError

    with pytest.raises(nats.errors.NoRespondersError):
        await patiently(attempt, 0.3)


async def test_an_attempt_given_its_own_try_length_has_it_from_the_first_try(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A watch's first try on a loaded server: not cut at FIRST_TRY_S, meant for one request.
    monkeypatch.setattr(outages, "FIRST_TRY_S", 0.01)
    tries = 0

    async def attempt() -> str:
        nonlocal tries
        tries += 1
        await asyncio.sleep(0.1)
        return "watching"

    assert await patiently(attempt, 2, retry_s=0.5) == "watching"
    assert tries == 1


async def test_a_try_failing_as_its_time_runs_out_is_not_reported_as_lost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(outages, "RETRY_S", 0.05)
    monkeypatch.setattr(outages, "MAX_DELAY_S", 0.01)
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: reported.append(context))
    tries = 0

    async def attempt() -> str:
        nonlocal tries
        tries += 1
        if tries == 1:
            raise nats.errors.NoRespondersError  # the outage: the next tries race elections
        if tries == 2:
            try:
                await asyncio.Event().wait()  # unanswered until its time is up
            except asyncio.CancelledError:
                # It failed in the same pass (nats-py's own timeout, say).
                raise nats.errors.TimeoutError from None
        return "stored"

    try:
        assert await patiently(attempt, 10) == "stored"
        gc.collect()  # a task whose failure nobody read is reported when collected
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(None)

    assert tries == 3
    assert reported == []
