"""KV buckets answering as a deposed leader can during a cluster's election: a write
refused because the key exists, and then no key at all."""

from typing import Any

from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from shared.contract import subjects


class Bucket(KeyValue):
    """``bucket`` of ``js``, as ``JetStreamContext.key_value`` opens it."""

    def __init__(self, js: JetStreamContext, bucket: str) -> None:
        stream, pre = subjects.kv_stream(bucket), f"$KV.{bucket}."
        super().__init__(name=bucket, stream=stream, pre=pre, js=js, direct=False)


class GoneBeforeRead(Bucket):
    """The claims bucket, whose key is deleted between a refused create and the read after
    it: the answers a deposed leader gives from its stale copy, or a claim's day ending."""

    def __init__(self, js: JetStreamContext) -> None:
        super().__init__(js, subjects.CALL_CLAIMS_BUCKET)
        self.deleted: list[str] = []

    async def get(self, key: str, revision: int | None = None, validate_keys: bool = True) -> Any:
        if not self.deleted:
            self.deleted.append(key)
            await self.delete(key)
        return await super().get(key, revision, validate_keys)


class PurgedBeforeOwnRead(Bucket):
    """``bucket``, whose ``key`` is gone without a trace just before it is first read: the
    read nats-py's ``create`` makes itself after a refusal (to tell a deleted key from a
    taken one) finds nothing, as the cluster fault test met it."""

    def __init__(self, js: JetStreamContext, bucket: str, key: str) -> None:
        super().__init__(js, bucket)
        self.key = key
        self.purged: list[str] = []

    async def _get(self, key: str, revision: int | None = None) -> Any:
        if key == self.key and not self.purged:
            self.purged.append(key)
            await self._js.purge_stream(self._stream, subject=f"{self._pre}{key}")
        return await super()._get(key, revision)
