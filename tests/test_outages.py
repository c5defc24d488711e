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


class SilentStream:
    """A stream without a leader: it drops every request unanswered until it answers.
    Keeps what reached it: the tries left unanswered, the most in flight at once since
    ``watch_from`` of them, and the order it answered the attempts in."""

    def __init__(self, watch_from: int) -> None:
        self.answering = False
        self.unanswered = 0
        self.in_flight = 0
        self.peak = 0
        self.watch_from = watch_from
        self.answered: list[int] = []
        self.reached = asyncio.Condition()

    def attempt(self, n: int, answer: Any = None) -> Any:
        async def attempt() -> int:
            if not self.answering:
                self.unanswered += 1
                self.in_flight += 1
                if self.unanswered > self.watch_from:
                    self.peak = max(self.peak, self.in_flight)
                async with self.reached:
                    self.reached.notify_all()
                try:
                    await asyncio.Event().wait()
                finally:
                    self.in_flight -= 1
            if answer is not None:
                raise answer
            self.answered.append(n)
            return n

        return attempt

    async def until_unanswered(self, tries: int) -> None:
        async with self.reached:
            await self.reached.wait_for(lambda: self.unanswered >= tries)


@pytest.fixture
def short_tries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outages, "FIRST_TRY_S", 0.2)
    monkeypatch.setattr(outages, "RETRY_S", 0.05)
    monkeypatch.setattr(outages, "MAX_DELAY_S", 0.01)


@pytest.mark.usefixtures("short_tries")
async def test_a_silent_stream_is_asked_one_try_at_a_time_and_the_rest_go_oldest_first() -> None:
    stream = SilentStream(watch_from=20)
    calls = []
    for n in range(20):  # a stream's election holds twenty calls in flight
        calls.append(asyncio.create_task(patiently(stream.attempt(n), 10, target="CALLS")))
        await stream.until_unanswered(n + 1)
    await stream.until_unanswered(20 + 3)  # their tries went unanswered; three probes since
    # One arriving now waits its turn without asking.
    calls.append(asyncio.create_task(patiently(stream.attempt(20), 10, target="CALLS")))
    await stream.until_unanswered(20 + 5)
    probes = stream.unanswered - 20
    stream.answering = True

    assert await asyncio.gather(*calls) == list(range(21))
    assert stream.peak == 1  # each of them trying on its own: twenty at a time
    assert stream.unanswered == 20 + probes  # nothing sent meanwhile but the probe
    assert stream.answered == list(range(21))  # the probe, then in the order they came


@pytest.mark.usefixtures("short_tries")
async def test_a_stream_is_silent_for_its_own_attempts_only() -> None:
    silent = SilentStream(watch_from=0)
    waiting = asyncio.create_task(patiently(silent.attempt(0), 10, target="CALLS"))
    await silent.until_unanswered(2)  # its first try, and a probe

    answering = SilentStream(watch_from=0)
    answering.answering = True
    assert await patiently(answering.attempt(1), 10, target="WORK") == 1

    silent.answering = True
    assert await waiting == 0


@pytest.mark.parametrize("ends", ["patience spent", "cancelled"])
@pytest.mark.usefixtures("short_tries")
async def test_a_probe_that_gives_up_unanswered_hands_the_probing_to_the_next(ends: str) -> None:
    stream = SilentStream(watch_from=0)
    probe = asyncio.create_task(
        patiently(stream.attempt(0), 0.6 if ends == "patience spent" else 10, target="CALLS")
    )
    await stream.until_unanswered(2)  # it probes
    waiting = asyncio.create_task(patiently(stream.attempt(1), 10, target="CALLS"))
    await stream.until_unanswered(3)  # (the waiting one does not ask)
    if ends == "cancelled":
        probe.cancel()
    with pytest.raises(asyncio.CancelledError if ends == "cancelled" else TimeoutError):
        await probe
    tried = stream.unanswered
    await stream.until_unanswered(tried + 2)  # asked by the next, in its turn
    stream.answering = True

    async with asyncio.timeout(5):  # not left waiting for an answer nobody asks for
        assert await waiting == 1


@pytest.mark.usefixtures("short_tries")
async def test_a_stream_answering_the_probe_at_all_lets_the_others_go() -> None:
    stream = SilentStream(watch_from=0)
    # The probe's answer contradicts itself (a deposed leader): the stream has a
    # leader again, and the probe tries again on its own.
    probe = asyncio.create_task(
        patiently(
            stream.attempt(0, outages.Contradicted("taken, then not found")), 0.5, target="KV"
        )
    )
    await stream.until_unanswered(2)
    waiting = asyncio.create_task(patiently(stream.attempt(1), 10, target="KV"))
    await stream.until_unanswered(3)
    stream.answering = True

    assert await waiting == 1
    with pytest.raises(outages.Contradicted):
        await probe
