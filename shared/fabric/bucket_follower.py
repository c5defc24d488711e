"""Following a KV bucket: every key's latest value, as it is loaded and as it changes.

A process that keeps a bucket in memory (the dispatcher's catalog, the
runtime accounts of ``midcall up``'s nats-server) reads it once, then hears
each change within milliseconds through a watch; after a reconnect it reads
it again, deletions included, since the watch's consumer may be gone with the
old server.
"""

import asyncio
import contextlib
import math
from collections.abc import Callable
from functools import partial

from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from shared.contract import subjects
from shared.fabric.outages import patiently

DELETIONS = ("DEL", "PURGE")
# How long each try of a (re-)watch may take: it is several requests.
WATCH_TRY_S = 2.0

Apply = Callable[[str, bytes | None], None]
"""One change: a key and its value, or None once it was deleted."""


class BucketFollower:
    def __init__(self, apply: Apply) -> None:
        self._apply = apply
        self._task: asyncio.Task[None] | None = None
        self._rewatch: asyncio.Task[None] | None = None
        self._kv: KeyValue | None = None
        self._watcher: KeyValue.KeyWatcher | None = None

    async def follow(self, js: JetStreamContext, bucket: str) -> None:
        """Load the bucket, return once every entry stored before is applied, keep following.

        nats-py's "initial values done" marker can arrive before the values on a
        busy machine, so it is not trusted: the stream's last sequence, read
        before watching, says when everything before is in.
        """
        loaded_at = (await js.stream_info(subjects.kv_stream(bucket))).state.last_seq
        self._kv = await js.key_value(bucket)
        loaded = asyncio.Event()
        if loaded_at == 0:
            loaded.set()
        await self._watch(loaded, loaded_at)
        await loaded.wait()

    def rewatch(self) -> None:
        """After a reconnect: read the bucket again from the latest value of every key.

        Until it succeeds: a reconnect in a cluster's election may find JetStream
        without a leader for seconds, and a follower that gave up would serve what
        it had forever."""
        if self._kv is None:
            return
        if self._rewatch is not None:
            self._rewatch.cancel()  # a reconnect again: this one starts afresh
        # Each try long: a watch is several requests, and one cut short on a loaded
        # server every time would never get through.
        self._rewatch = asyncio.create_task(
            patiently(partial(self._watch, asyncio.Event(), 0), math.inf, WATCH_TRY_S)
        )

    async def _watch(self, loaded: asyncio.Event, loaded_at: int) -> None:
        assert self._kv is not None
        watcher = await self._kv.watchall()
        await self._stop_watching()
        self._watcher = watcher
        self._task = asyncio.create_task(self._consume(watcher, loaded, loaded_at))

    async def _consume(
        self, watcher: KeyValue.KeyWatcher, loaded: asyncio.Event, loaded_at: int
    ) -> None:
        async for entry in watcher:
            if entry is None:  # nats-py's marker; see follow()
                continue
            self._apply(entry.key, None if entry.operation in DELETIONS else entry.value)
            if entry.revision is not None and entry.revision >= loaded_at:
                loaded.set()

    async def stop(self) -> None:
        if self._rewatch is not None:
            self._rewatch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._rewatch
        await self._stop_watching()

    async def _stop_watching(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._watcher is not None:
            with contextlib.suppress(NatsError):  # its consumer may be gone with the server
                await self._watcher.stop()  # type: ignore[no-untyped-call]
