"""A server-side timer per call: at the call's deadline JetStream itself publishes a message.

The timer is a JetStream message schedule (ADR-51, nats-server 2.12+): a
message on ``midcall.timers.<conversation>.<call_key>`` carrying
``Nats-Schedule: @at <UTC time>`` and ``Nats-Schedule-Target:
midcall.deadline.<conversation>``. The server keeps it in the stream and, at
that time, stores its body on the target subject, where a durable consumer
hands it to whichever replica is alive. Nothing in the
process that armed the timer has to survive; measured against nats-server
2.15.1 (tests/test_deadline_timers.py pins what the code relies on):

- it fires 0-250 ms late: the server never sets its schedule timer to less
  than 250 ms, to spare ingest;
- a time already past fires at once (within that 250 ms), it is not refused;
- the definition is removed from the stream once it has fired;
- it survives a nats-server restart, even a SIGKILL; a deadline passed while
  the server was down fires about 250 ms after it is back;
- the fired message keeps the definition's own headers (so ``Midcall-Call-Key``
  and the trace context), adds ``Nats-Scheduler`` (the schedule subject) and
  ``Nats-Schedule-Next: purge``, and does not carry ``Nats-Msg-Id``;
- it is stored, not sent on core NATS: only a JetStream consumer sees it;
- a definition older than the stream's ``max_age`` is dropped unfired, hence
  ``MAX_AHEAD_S``.

A call answered in time disarms its timer, which costs nats-server less than
storing, delivering and acking a fired one; a disarm can still lose the race
with a timer firing, so whoever handles a deadline checks the call's marks
(shared.fabric.call_marks) first.
"""

import json
from datetime import UTC, datetime, timedelta

from nats.aio.client import Client

from shared.contract import subjects
from shared.contract.tools import MAX_CALLBACK_TIMEOUT_S
from shared.fabric.messaging import Publisher

# Headers of ADR-51 (nats-py 2.16 also names them in nats.js.api.Header).
SCHEDULE_HEADER = "Nats-Schedule"
TARGET_HEADER = "Nats-Schedule-Target"
# Ours: copied by the server onto the fired message, so its handler knows the call
# (the target subject names only the conversation).
CALL_KEY_HEADER = "Midcall-Call-Key"

# A call's timer fires this long after its deadline: the executor's own timeout
# answers first while it lives, and the timer only stands in for a dead one.
DEADLINE_GRACE_S = 0.5

# Deadlines are at most 60 s away, or MAX_CALLBACK_TIMEOUT_S for a tool completing through
# its callback; 30 s more absorbs clock skew between replicas and the server. Further
# ahead is refused rather than dropped unfired by the stream's max_age (300 s).
MAX_AHEAD_S = MAX_CALLBACK_TIMEOUT_S + 30.0


def at_header(at: datetime) -> str:
    """``@at`` with an RFC 3339 UTC time to the microsecond.

    The server takes fractional seconds (up to nanoseconds) and numeric offsets,
    and refuses a time without a zone, a lowercase ``z`` or epoch seconds
    (400, err_code 10189). Whole seconds would make every timer up to 1 s early.
    """
    if at.tzinfo is None:
        raise ValueError("deadline must be timezone-aware")
    return "@at " + at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class DeadlineTimers:
    def __init__(self, client: Client) -> None:
        self._client = client
        self._publisher = Publisher(client.jetstream())

    async def arm(self, conversation_id: str, call_key: str, at: datetime, body: bytes) -> None:
        """Have ``body`` published on ``subjects.deadline(conversation_id)`` at ``at``.

        Idempotent within the stream's duplicate window: the Nats-Msg-Id is the
        call's, so a re-sent arm (even after the timer fired) is dropped, and
        the timer fires once. A time in the past fires at once.
        """
        schedule = at_header(at)
        if at - datetime.now(UTC) > timedelta(seconds=MAX_AHEAD_S):
            raise ValueError(f"deadline more than {MAX_AHEAD_S:.0f} s ahead: {at.isoformat()}")
        headers = {
            SCHEDULE_HEADER: schedule,
            TARGET_HEADER: subjects.deadline(conversation_id),
            CALL_KEY_HEADER: call_key,
            "Nats-Msg-Id": f"{conversation_id}/{call_key}/deadline",
        }
        # The fired message keeps these headers, the trace context included.
        await self._publisher.raw(
            body, subjects.timer(conversation_id, call_key), subjects.TIMERS_STREAM, headers
        )

    async def disarm(self, conversation_id: str, call_key: str) -> None:
        """Cancel the call's timer: it was answered in time.

        A purge of its schedule subject, sent without waiting for the answer (a
        timer left armed only fires into a handler that finds the call answered).
        Purging one that already fired, or was never armed, does nothing; the
        arm's Nats-Msg-Id outlives the purge, so a late re-sent arm stays cancelled.
        """
        purge = {"filter": subjects.timer(conversation_id, call_key)}
        await self._client.publish(
            f"$JS.API.STREAM.PURGE.{subjects.TIMERS_STREAM}", json.dumps(purge).encode()
        )
