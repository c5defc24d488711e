"""Idempotency by call id, in a KV bucket every dispatcher replica shares.

JetStream's ``Nats-Msg-Id`` window catches a runtime's quick re-publish; the
claim catches a call published again later (a runtime retrying after its own
restart). A claim records how far the call got, so a redelivery after a
dispatcher crash resumes the call instead of dropping it.
"""

import hashlib
from enum import StrEnum

from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue


class Stage(StrEnum):
    ACCEPTED = "accepted"
    QUEUED = "queued"


def claim_key(conversation_id: str, call_id: str) -> str:
    # Call ids are the runtime's free text; KV keys are not.
    return hashlib.sha256(f"{conversation_id}\0{call_id}".encode()).hexdigest()


class Claims:
    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    async def claim(self, conversation_id: str, call_id: str) -> Stage | None:
        """None when this is the first sighting; otherwise the stage already reached."""
        key = claim_key(conversation_id, call_id)
        try:
            await self._kv.create(key, Stage.ACCEPTED.encode())
        except KeyWrongLastSequenceError:
            entry = await self._kv.get(key)
            return Stage((entry.value or b"").decode() or Stage.ACCEPTED)
        return None

    async def advance(self, conversation_id: str, call_id: str, stage: Stage) -> None:
        await self._kv.put(claim_key(conversation_id, call_id), stage.encode())
