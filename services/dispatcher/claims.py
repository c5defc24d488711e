"""Idempotency by call id, in a KV bucket every dispatcher replica shares.

JetStream's ``Nats-Msg-Id`` window catches a runtime's quick re-publish; the
claim catches a call published again later (a runtime retrying after its own
restart). One write per call: the claim is made before anything is
published, and a redelivery of the claimed message (a dispatcher died before
acking it) resumes the call, whose publishes JetStream de-duplicates.
"""

import hashlib

from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue

CLAIMED = b"accepted"


def claim_key(conversation_id: str, call_id: str) -> str:
    # Call ids are the runtime's free text; KV keys are not.
    return hashlib.sha256(f"{conversation_id}\0{call_id}".encode()).hexdigest()


class Claims:
    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    async def claim(self, conversation_id: str, call_id: str) -> bool:
        """True for the first sighting of this call; False when it was claimed before."""
        try:
            await self._kv.create(claim_key(conversation_id, call_id), CLAIMED)
        except KeyWrongLastSequenceError:
            return False
        return True
