"""A KV bucket kept equal to what SQL holds: the registry's way of telling every other service.

SQL is the source of truth: every write lands there first, then here, and
``sync`` makes the bucket match SQL again when the registry starts.
"""

from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from shared.contract import subjects


class BucketUnavailable(Exception):
    """The bucket could not be written; the SQL change stands and a retry re-sends it."""


class BucketMirror:
    def __init__(self, js: JetStreamContext, bucket: str, kv: KeyValue) -> None:
        self._js = js
        self._kv = kv
        # How NATS lays a bucket out: stream KV_<bucket>, one subject per key.
        self._stream = subjects.kv_stream(bucket)
        self._key_prefix = f"$KV.{bucket}."

    @classmethod
    async def open(cls, js: JetStreamContext, bucket: str) -> "BucketMirror":
        return cls(js, bucket, await js.key_value(bucket))

    async def put(self, key: str, value: bytes) -> None:
        try:
            await self._kv.put(key, value)
        except NatsError as exc:
            raise BucketUnavailable(f"could not write {key}: {exc!r}") from exc

    async def delete(self, key: str) -> None:
        try:
            await self._kv.delete(key)
        except NatsError as exc:
            raise BucketUnavailable(f"could not delete {key}: {exc!r}") from exc

    async def sync(self, wanted: dict[str, bytes]) -> None:
        """Write every wanted key and delete the keys SQL no longer has."""
        stale = [key for key in await self._stored_keys() - wanted.keys() if await self._live(key)]
        for key, value in wanted.items():
            await self.put(key, value)
        for key in sorted(stale):
            await self.delete(key)

    async def _stored_keys(self) -> set[str]:
        """Every key with a value or a delete marker.

        Not ``KeyValue.keys()``: its watcher can signal "no more keys" before
        the first one arrives, and under load it reports an empty bucket.
        """
        info = await self._js.stream_info(self._stream, subjects_filter=f"{self._key_prefix}>")
        return {subject.removeprefix(self._key_prefix) for subject in info.state.subjects or {}}

    async def _live(self, key: str) -> bool:
        try:
            await self._kv.get(key)
        except KeyNotFoundError:  # also KeyDeletedError: a delete marker
            return False
        return True
