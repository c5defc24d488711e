"""Waiting for the completion of a call whose API answered 202 Accepted.

The registry stores each completion once in the completions bucket, under
the run's key (shared.security.callback_tokens); the call's executor marks
the call accepted (shared.fabric.call_marks) and waits for that key. An
executor that stops hands its waiting calls back to JetStream: the replica
that gets one finds the mark and waits in turn, without sending the request
again. One ordered consumer per process hears every completion as it
is stored and wakes the call waiting for it; a call starts waiting with a
read of its key, so a completion stored before (while its executor was
restarting, or just after the 202) is found too. After a reconnect the
waiting keys are read again, as the consumer may have missed a moment.
"""

import asyncio
import contextlib
import logging
from datetime import datetime

from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue
from pydantic import ValidationError

from shared.contract import subjects
from shared.contract.events import ExecuteRequest, HttpResponse, utcnow
from shared.fabric.call_marks import CallMarks, Mark
from shared.fabric.consumer import Retry

log = logging.getLogger("midcall.http_executor")
PREFIX = f"$KV.{subjects.CALLBACKS_BUCKET}."


class Completions:
    def __init__(self) -> None:
        self._kv: KeyValue | None = None
        self._marks: CallMarks | None = None
        self._stopping = False
        self._subscription: JetStreamContext.PushSubscription | None = None
        self._waiting: dict[str, asyncio.Future[HttpResponse]] = {}
        self._rereads: set[asyncio.Task[None]] = set()

    async def start(self, js: JetStreamContext, marks: CallMarks) -> None:
        self._kv = await js.key_value(subjects.CALLBACKS_BUCKET)
        self._marks = marks
        self._subscription = await js.subscribe(
            f"{PREFIX}>",
            stream=subjects.kv_stream(
                subjects.CALLBACKS_BUCKET
            ),  # named: no stream lookup, none allowed
            cb=self._heard,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.NEW,
            idle_heartbeat=2.0,
        )

    def release(self) -> None:
        """The executor is stopping: every waiting call goes back to JetStream now, for a
        replica to wait on, rather than holding the shutdown up to its deadline."""
        self._stopping = True
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(Retry(0, "the executor stopped while the call waited"))

    async def stop(self) -> None:
        if self._subscription is not None:
            with contextlib.suppress(NatsError):
                await self._subscription.unsubscribe()

    async def stored(self, key: str) -> HttpResponse | None:
        """The completion stored for ``key``, if any (a call run again after a restart)."""
        assert self._kv is not None
        try:
            entry = await self._kv.get(key)
        except KeyNotFoundError:
            return None
        return _parsed(key, entry.value)

    async def accept(self, work: ExecuteRequest) -> None:
        assert self._marks is not None
        conversation, call = work.conversation.key, work.call.call_id
        await self._marks.mark(conversation, call, Mark.ACCEPTED, work.attempt)

    async def was_accepted(self, key: str) -> bool:
        assert self._marks is not None
        return await self._marks.run_has(key, Mark.ACCEPTED)

    async def wait(self, key: str, deadline_at: datetime) -> HttpResponse | None:
        """The completion for ``key``, or None once ``deadline_at`` passed without one."""
        if self._stopping:
            raise Retry(0, "the executor is stopping")
        future = self._waiting.setdefault(key, asyncio.get_running_loop().create_future())
        try:
            await self._reread(key)
            remaining = (deadline_at - utcnow()).total_seconds()
            async with asyncio.timeout(max(0.0, remaining)):
                return await asyncio.shield(future)
        except TimeoutError:
            return None
        finally:
            self._waiting.pop(key, None)

    @property
    def waiting(self) -> int:
        """How many calls wait for their completion here."""
        return len(self._waiting)

    def reconnected(self) -> None:
        for key in list(self._waiting):
            task = asyncio.create_task(self._reread(key))
            self._rereads.add(task)
            task.add_done_callback(self._rereads.discard)

    async def _reread(self, key: str) -> None:
        try:
            response = await self.stored(key)
        except NatsError as exc:  # the watch still hears it, or the next reconnect reads it
            log.warning("completion %s could not be read now: %s", key, exc)
            return
        if response is not None:
            self._resolve(key, response)

    async def _heard(self, message: Msg) -> None:
        key = message.subject.removeprefix(PREFIX)
        if key in self._waiting:
            response = _parsed(key, message.data)
            if response is not None:
                self._resolve(key, response)

    def _resolve(self, key: str, response: HttpResponse) -> None:
        future = self._waiting.get(key)
        if future is not None and not future.done():
            future.set_result(response)


def _parsed(key: str, value: bytes | None) -> HttpResponse | None:
    try:
        return HttpResponse.model_validate_json(value or b"")
    except ValidationError:  # only the registry writes here; never a reason to crash
        log.warning("completion %s is not a response: ignored", key)
        return None
