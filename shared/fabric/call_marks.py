"""How far each call got, in one KV bucket every replica shares, so nothing is done twice.

- **claimed** (dispatcher): JetStream's ``Nats-Msg-Id`` window catches a
  runtime's quick re-publish; the claim catches a call published again
  later (a runtime retrying after its own restart). It is made before
  anything is published, and a *redelivery* of the claimed message (a
  dispatcher died before acking it) resumes the call, whose publishes
  JetStream de-duplicates.
- **executed** (executor): written once the outcome's publish is confirmed.
  A redelivered work item whose call is executed is not sent to the API
  again.
- **accepted** (http-executor): the API answered 202 and completes the call
  through its callback (shared.security.callback_tokens). A redelivered
  work item whose call is accepted waits for that completion; its request
  is not sent again.
- **answered** (injector): *claimed* before the result is published, by the
  call's outcome or by its deadline's timer, and only the first claimant
  answers: a publish held up by a leader election can outlast the deadline,
  and the timer must then find the call answered rather than answer it with
  a timeout as well.
- **published** (injector): written once the outcome's result is confirmed
  stored. A redelivered outcome whose result was published publishes nothing
  again, so core subscribers hear one result; one redelivered in between
  finds its own claim and publishes the same result again (the same bytes,
  kept once by the stream).

A process that dies between its publish and its mark leaves the narrow
window where a redelivery repeats the effect; JetStream still keeps one
copy of each event in the stream.

*executed* and *published* are sent without waiting for JetStream's
confirmation (two round trips fewer per call): each only spares a
redelivery an effect that is safe to repeat. A lost one
lets a redelivered work item call the API again, with the same
Idempotency-Key, whose second outcome finds the answer claimed by the first;
or a redelivered outcome publish its result again, the same bytes under the
same ``Nats-Msg-Id``. *accepted* is confirmed: the work item is acked after
it, and nothing else would remember that the API has the call.

A replay (``midcall replay``) is a run of its own: its marks carry its
attempt number, so it is executed and answered once more, and once only.
"""

import hashlib
from enum import StrEnum

from nats.aio.client import Client
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from shared.contract import subjects
from shared.fabric.outages import PATIENCE_S, Contradicted, patiently


class Mark(StrEnum):
    EXECUTED = "executed"
    ACCEPTED = "accepted"
    ANSWERED = "answered"
    PUBLISHED = "published"


def call_key(conversation: str, call_id: str) -> str:
    """``conversation`` is a ``Conversation.key``: calls of two accounts never share marks."""
    # Call ids are the runtime's free text; KV keys are not.
    return hashlib.sha256(f"{conversation}\0{call_id}".encode()).hexdigest()


class CallMarks:
    def __init__(self, kv: KeyValue, client: Client) -> None:
        self._kv = kv
        self._client = client

    @classmethod
    async def of(cls, client: Client) -> "CallMarks":
        return cls(await client.jetstream().key_value(subjects.CALL_CLAIMS_BUCKET), client)

    async def claim(self, conversation: str, call_id: str, claimant: str) -> bool:
        """True for the first sighting of this call, and again for the same ``claimant``
        (the stored message that brought it): a claim made just before a NATS outage,
        whose confirmation was lost, is still its maker's when tried again."""
        return await self._claim(call_key(conversation, call_id), claimant)

    async def mark(
        self,
        conversation: str,
        call_id: str,
        mark: Mark,
        attempt: int = 1,
        *,
        confirmed: bool = True,
    ) -> None:
        """Record ``mark``, through a NATS outage: its effect is already out, and a mark
        given up on would make the message's redelivery repeat that effect. Not
        ``confirmed``: sent, not waited for (see the module's notes for which may be)."""
        key = _mark_key(conversation, call_id, mark, attempt)
        if not confirmed:
            await self._client.publish(subjects.kv_subject(subjects.CALL_CLAIMS_BUCKET, key), b"")
            return

        async def put() -> None:
            await self._kv.put(key, b"")

        await patiently(put, PATIENCE_S, target=subjects.CALL_CLAIMS_BUCKET)

    async def claim_answer(
        self, conversation: str, call_id: str, attempt: int, claimant: str
    ) -> bool:
        """Whether ``claimant`` may answer: it claimed the answer first, now or before
        (a redelivery of its own message finishes what it began)."""
        return await self._claim(_mark_key(conversation, call_id, Mark.ANSWERED, attempt), claimant)

    async def has(self, conversation: str, call_id: str, mark: Mark, attempt: int = 1) -> bool:
        return await self.run_has(run_key(conversation, call_id, attempt), mark)

    async def run_has(self, run: str, mark: Mark) -> bool:
        """``has``, for a run known by its key (``run_key``) alone."""

        async def get() -> bool:
            try:
                await self._kv.get(f"{run}.{mark}")
            except KeyNotFoundError:
                return False
            return True

        return await patiently(get, PATIENCE_S, target=subjects.CALL_CLAIMS_BUCKET)

    async def _claim(self, key: str, claimant: str) -> bool:
        # Through a stream's leader election: the message in hand waits (heartbeated)
        # rather than going back with a growing delay.
        async def create() -> bool:
            try:
                await self._kv.create(key, claimant.encode())
            except KeyNotFoundError as gone:
                # nats-py's create reads a refused key itself (a deleted one may be made
                # again), and this is that read finding nothing: the same contradiction.
                raise Contradicted(f"claim {key} refused, then not found") from gone
            except KeyWrongLastSequenceError:
                try:
                    entry = await self._kv.get(key)
                except KeyNotFoundError as gone:
                    # Taken, then not there: a deposed leader's stale answer (or the
                    # claim's day ran out in between). Made or read again, it holds.
                    raise Contradicted(f"claim {key} taken, then not found") from gone
                return entry.value == claimant.encode()
            return True

        return await patiently(create, PATIENCE_S, target=subjects.CALL_CLAIMS_BUCKET)


def run_key(conversation: str, call_id: str, attempt: int) -> str:
    """One run of a call (a replay is a run of its own), as a subject token and KV key part."""
    key = call_key(conversation, call_id)
    return key if attempt == 1 else f"{key}-{attempt}"


def _mark_key(conversation: str, call_id: str, mark: Mark, attempt: int) -> str:
    return f"{run_key(conversation, call_id, attempt)}.{mark}"
