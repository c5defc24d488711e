"""A call's stored events, for a runtime of an account's own credentials that missed them.

Such a runtime reads through a core subscription in its account (the
contract gives it no consumer on Midcall's streams), so what is published
while it reconnects does not reach it. It asks on
``midcall.conv.<conversation>.stored``; nats-server maps that to
``midcall.conv.<account>.<conversation>.stored``, so the account is the
subject's, never the asker's say, and the answer is read from that
account's own subjects of ``MIDCALL_ACCOUNT_CONV``.
"""

import json
import logging

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import DeliverPolicy
from pydantic import ValidationError

from shared.contract import subjects
from shared.contract.events import StoredEvent, StoredEvents, StoredEventsRequest

log = logging.getLogger("midcall.registry")
KINDS = ("pending", "progress", "result")
# Between two stored events of a conversation being read: nats-server has them all at hand.
READ_WAIT_S = 2.0
QUEUE = "midcall-registry"


class StoredEventsService:
    def __init__(self, client: Client) -> None:
        self._client = client

    async def start(self) -> None:
        await self._client.subscribe(subjects.ACCOUNT_STORED, queue=QUEUE, cb=self._asked)

    async def _asked(self, message: Msg) -> None:
        account, conversation = subjects.conversation_origin(message.subject)
        if not message.reply or account is None or conversation is None:
            return
        try:
            asked = StoredEventsRequest.model_validate_json(message.data)
        except ValidationError as exc:
            await self._reply(message, StoredEvents(error=f"The request could not be read: {exc}"))
            return
        try:
            events = await self._read(account, conversation, asked.call_id)
        except (TimeoutError, NatsError) as exc:
            log.warning("stored events of %s/%s not read: %r", account, conversation, exc)
            return  # no answer: the runtime asks again after its own timeout
        await self._reply(message, fitting(events, self._client.max_payload))

    async def _read(self, account: str, conversation: str, call_id: str) -> list[StoredEvent]:
        """The call's events among the conversation's, in the order stored."""
        js = self._client.jetstream()
        subscription = await js.subscribe(
            subjects.conversation(conversation, account),
            stream=subjects.ACCOUNT_CONV_STREAM,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.ALL,
        )
        found: list[StoredEvent] = []
        try:
            info = await subscription.consumer_info()
            delivered = info.delivered.consumer_seq if info.delivered else 0
            if not info.num_pending and not delivered:
                return found  # nothing stored for the conversation
            while True:
                msg = await subscription.next_msg(timeout=READ_WAIT_S)
                kind = msg.subject.rpartition(".")[2]
                event = _event(msg.data)
                if kind in KINDS and event is not None and event.get("call_id") == call_id:
                    found.append(StoredEvent.model_validate({"kind": kind, "event": event}))
                if not msg.metadata.num_pending:
                    return found
        except NatsTimeout:
            return found  # the rest aged out meanwhile
        finally:
            await subscription.unsubscribe()

    async def _reply(self, message: Msg, answer: StoredEvents) -> None:
        await self._client.publish(message.reply, answer.model_dump_json().encode())


def fitting(events: list[StoredEvent], max_payload: int) -> StoredEvents:
    """The answer, within one NATS message: the progress is left out first, then the
    pending (the result always fits, as it was published in one)."""
    answer = StoredEvents(events=events)
    for dropped in ("progress", "pending"):
        if len(answer.model_dump_json()) < max_payload:
            break
        answer = StoredEvents(events=[e for e in answer.events if e.kind != dropped])
    return answer


def _event(data: bytes) -> dict[str, object] | None:
    try:
        event = json.loads(data)
    except ValueError:
        return None
    return event if isinstance(event, dict) else None
