"""A KV bucket answering as a deposed leader can during a cluster's election: a write
refused because the key exists, and then no key at all."""

from typing import Any

from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from shared.contract import subjects


class PurgedBeforeOwnRead(KeyValue):
    """``bucket``, whose ``key`` is gone without a trace just before it is first read: the
    read nats-py's ``create`` makes itself after a refusal (to tell a deleted key from a
    taken one) finds nothing, as the cluster fault test met it."""

    def __init__(self, js: JetStreamContext, bucket: str, key: str) -> None:
        stream, pre = subjects.kv_stream(bucket), f"$KV.{bucket}."
        super().__init__(name=bucket, stream=stream, pre=pre, js=js, direct=False)
        self.key = key
        self.purged: list[str] = []

    async def _get(self, key: str, revision: int | None = None) -> Any:
        if key == self.key and not self.purged:
            self.purged.append(key)
            await self._js.purge_stream(self._stream, subject=f"{self._pre}{key}")
        return await super()._get(key, revision)
