"""NATS being away for a while: which failures that is, and riding it out.

A nats-server restart or a cluster fail-over takes seconds; a request sent
just before it may never be answered. Work whose effects are already paid
for (an API answered, an event is ready) is better retried in place, in short
attempts, than failed and redelivered.
"""

import asyncio
import contextlib
import logging
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import nats.errors
import nats.js.errors

from shared.fabric.elections import ELECTIONS

log = logging.getLogger("midcall.outages")
T = TypeVar("T")

# How long work in hand waits out an outage: a clustered fail-over takes about 6 s.
PATIENCE_S = 30.0
# The longest pause between tries. A stream's new leader (elected 4-9 s after the old
# one died, which leaves a call about a second of the 10 s it may wait) is asked at once
# where the process hears JetStream's election advisories (shared.fabric.elections, every
# service), and otherwise within this and ``RETRY_S`` of taking over.
MAX_DELAY_S = 0.25
# How long one try may take: the first, far longer than a loaded server needs (its p99 is
# milliseconds), and no longer: one sent to a stream just before it elects a leader goes
# unanswered and is waited out (2 s made a call wait 2.8 s past an election in the cluster
# fault test). Once one failed (a stream or bucket with no leader until nats-server
# elects one drops requests unanswered), tries are short, and an election heard ends the
# one under way. Trying again is safe: a publish carries the same Nats-Msg-Id (JetStream
# answers one still in process at once, DUPLICATE_IN_PROCESS), a claim recognises its
# own, and the rest are reads or puts of the same value.
FIRST_TRY_S = 1.0
RETRY_S = 0.5


class Contradicted(Exception):
    """Two answers about one thing that cannot both hold, such as a key that exists and
    then is not found: a leader deposed by an election it slept through (a node cut
    off, then back) answers from its own copy until it hears of the new term. Asked
    again, the leader answers."""


class Elected(Exception):
    """A leader was elected while a try waited for an answer that may never come."""


# Failures worth trying again: NATS or JetStream being away or slow. Anything
# else (a bug, an input the code cannot take) would fail the same way forever.
TRANSIENT: tuple[type[Exception], ...] = (
    Contradicted,
    Elected,
    TimeoutError,
    ConnectionError,
    nats.errors.TimeoutError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.NoServersError,
    nats.errors.NoRespondersError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.StaleConnectionError,
    nats.js.errors.ServiceUnavailableError,
    nats.js.errors.NoStreamResponseError,  # JetStream not back yet after a restart
)


# JetStream's "duplicate message id is in process": a publish with this Nats-Msg-Id,
# sent before a leader change, is still being stored. Asked again, it answers as a
# duplicate once that one is in, or stores this one if it was lost.
DUPLICATE_IN_PROCESS = 10158


def transient(failure: Exception) -> bool:
    """Whether ``failure`` is NATS or JetStream being away or busy, worth trying again."""
    if isinstance(failure, TRANSIENT):
        return True
    # Not every APIError subclass sets err_code (nats-py's KeyNotFoundError does not).
    return getattr(failure, "err_code", None) == DUPLICATE_IN_PROCESS


async def patiently(
    attempt: Callable[[], Awaitable[T]],
    patience_s: float,
    retry_s: float | None = None,
    target: str | None = None,
) -> T:
    """Run ``attempt`` until it succeeds, through NATS outages of up to ``patience_s``;
    its result. Each try after a failed one may take ``retry_s`` (``RETRY_S``: short,
    for one request; an attempt that is several, a watch, passes what they may need,
    which its first try may take too). ``target`` names the stream or bucket the
    attempt asks: while it gives no answer, this process's attempts on it take turns
    (``_Silences``).

    For effects already paid for (an API answered): retrying the publish here
    beats failing the message, whose redelivery would pay for them again. Also
    for a read that a moment's outage should not fail (nats-server answers
    "no responders" for JetStream's API for an instant while it reloads its
    accounts, which runtime credentials make it do).
    """
    give_up = time.monotonic() + patience_s
    first_s = FIRST_TRY_S if retry_s is None else max(FIRST_TRY_S, retry_s)
    retry_s = RETRY_S if retry_s is None else retry_s
    silences = _silences()
    probing = await silences.turn(target, give_up)
    answered = False  # whether the target answered this attempt's last try
    try:
        while True:
            delay = 0.1
            # A probe's tries follow a failed one: short, and ended by an election.
            failed = probing
            try_s = retry_s if probing else first_s
            while True:
                try:
                    async with asyncio.timeout(try_s):
                        # Once a try failed, a stream may be without a leader: its
                        # election (as JetStream announces it) ends the try that waits for
                        # none.
                        result = await (_until_elected(attempt) if failed else attempt())
                    answered = True
                    return result
                except Exception as failure:
                    answered = not silent(failure)
                    if not transient(failure) or time.monotonic() + delay > give_up:
                        raise
                    if probing and answered:
                        silences.answered(target)  # the others go; this one goes on alone
                        probing = False
                    elif not probing and not answered and target is not None:
                        probing = await silences.turn(target, give_up, silenced=True)
                        if not probing:
                            break  # it answered another's probe meanwhile: a first try
                    failed = True
                    try_s = retry_s
                    if isinstance(failure, Elected):
                        continue  # asked again at once: the new leader may answer
                    log.warning("NATS unavailable; trying again in %.1f s", delay)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):
                            await ELECTIONS.next()
                    delay = min(2 * delay, MAX_DELAY_S)
    finally:
        if probing:
            # Answered: the others go. Given up on unanswered (patience spent, stopped):
            # the oldest of them probes next.
            if answered:
                silences.answered(target)
            else:
                silences.hand_on(target)


def silent(failure: Exception) -> bool:
    """Whether ``failure`` is a stream or bucket giving no answer (no leader, NATS away),
    rather than an answer that asks for another try."""
    return (
        transient(failure)
        and not isinstance(failure, Contradicted)
        and (getattr(failure, "err_code", None) != DUPLICATE_IN_PROCESS)
    )


class _Silences:
    """The streams and buckets that gave an event loop's attempts no answer (no leader while
    nats-server elects one, NATS away). One attempt at a time probes each, in short tries
    ended by each election heard; every other attempt on it waits its turn, oldest first,
    and all go once it answers. Each trying on its own, the hundreds of calls a stream's
    election held kept as many tries a second going at a cluster electing leaders on two
    shared cores, and after the election their short tries timed out behind the backlog
    and were sent again, adding to it (the cluster fault test, docs/scaling.md).
    """

    def __init__(self) -> None:
        # A silent target's attempts waiting their turn: True to probe it, False to go.
        self._waiting: dict[str, deque[asyncio.Future[bool]]] = {}

    async def turn(self, target: str | None, give_up: float, *, silenced: bool = False) -> bool:
        """Wait while ``target`` is silent; whether this attempt is to probe it. An attempt
        that found it ``silenced`` probes it unless another already does."""
        if target is None:
            return False
        waiting = self._waiting.get(target)
        if waiting is None:
            if silenced:
                self._waiting[target] = deque()
            return silenced
        turn = asyncio.get_running_loop().create_future()
        waiting.append(turn)
        try:
            async with asyncio.timeout(give_up - time.monotonic()):
                return await asyncio.shield(turn)
        except BaseException as stopped:
            if turn.done() and turn.result():
                self.hand_on(target)  # handed the probe as it gave up: passed on
            turn.cancel()
            if isinstance(stopped, TimeoutError):
                raise TimeoutError(f"{target} gave no answer") from None
            raise

    def answered(self, target: str | None) -> None:
        """``target`` answered its probe: every attempt waiting on it goes, in order."""
        for turn in self._waiting.pop(target, ()) if target is not None else ():
            if not turn.done():
                turn.set_result(False)

    def hand_on(self, target: str | None) -> None:
        """The probe of ``target`` gave up unanswered: the oldest attempt waiting probes
        next."""
        waiting = self._waiting.get(target) if target is not None else None
        while waiting:
            turn = waiting.popleft()
            if not turn.done():
                turn.set_result(True)
                return
        if target is not None:
            self._waiting.pop(target, None)  # nobody left to probe it


# Per event loop: a future belongs to the loop that made it (a test runs several).
_SILENCES: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Silences]" = (
    weakref.WeakKeyDictionary()
)


def _silences() -> _Silences:
    # Looked up on every attempt: made only once per loop, not as a default each time.
    loop = asyncio.get_running_loop()
    silences = _SILENCES.get(loop)
    if silences is None:
        silences = _SILENCES[loop] = _Silences()
    return silences


async def _until_elected(attempt: Callable[[], Awaitable[T]]) -> T:
    trying = asyncio.ensure_future(attempt())
    # A try that fails as its time runs out (under load both come due in one pass) is
    # given up on with its failure unread, which asyncio would log as an error.
    trying.add_done_callback(_read_failure)
    elected = ELECTIONS.next()
    try:
        await asyncio.wait((trying, elected), return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # the try's time is up, or we are being stopped
        trying.cancel()
        raise
    finally:
        elected.cancel()
    if trying.done():
        return trying.result()
    trying.cancel()
    raise Elected


def _read_failure(trying: "asyncio.Future[Any]") -> None:
    if not trying.cancelled():
        trying.exception()
