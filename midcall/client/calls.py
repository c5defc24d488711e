"""One call seen from the runtime: its pending, its progress, then exactly one result."""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from midcall.client.errors import failure
from shared.contract.events import ToolCallPending, ToolCallProgress, ToolCallResult


class Call:
    """A placed call. ``pending()`` is what to say now; ``progress()`` what its API reports
    while it runs; ``result()`` what the tool did.

    Events of the call that arrive again (a core subscriber after a service's
    crash, a re-issued call id catching up) are kept once: the first pending,
    each progress once, the first result.
    """

    def __init__(
        self,
        call_id: str,
        conversation_id: str,
        tool: str,
        cancel: Callable[[str | None], Awaitable[None]],
    ) -> None:
        self.call_id = call_id
        self.conversation_id = conversation_id
        self.tool = tool
        self._cancel = cancel
        loop = asyncio.get_running_loop()
        self._pending: asyncio.Future[ToolCallPending] = loop.create_future()
        self._result: asyncio.Future[ToolCallResult] = loop.create_future()
        # Every progress heard, for each iterator to read from its start.
        self._updates: list[ToolCallProgress] = []
        # Made only while an iterator waits, so a call without progress costs no event.
        self._news: asyncio.Event | None = None

    async def pending(self) -> ToolCallPending:
        """The pending event (``speak``, ``speech``, ``muted``). A call the fabric refused
        at once (unknown tool, invalid arguments) has none: its error is raised."""
        waiting: set[asyncio.Future[Any]] = {self._pending, self._result}
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if self._pending.done():
            return self._pending.result()
        raise self._failure()

    async def progress(self) -> AsyncIterator[ToolCallProgress]:
        """``async for update in call.progress():`` each progress the call's API reported,
        in the order heard, those heard before the loop started included; the loop ends
        when the result arrives (``result()`` gives it). Any number of loops may read one
        call, each sees every update. Progress heard after the result is dropped."""
        seen = 0
        while True:
            while seen < len(self._updates):
                yield self._updates[seen]
                seen += 1
            if self.done:
                return
            if self._news is None:
                self._news = asyncio.Event()
            await self._news.wait()

    async def result(self) -> ToolCallResult:
        """The success result, or its error raised as the ``CallFailed`` of its code."""
        result = await asyncio.shield(self._result)
        if result.status == "error":
            raise self._failure()
        return result

    async def cancel(self, reason: str | None = None) -> None:
        """Stop the call (the caller interrupted, hung up): if it is still running it is
        aborted, the tool's API told, and ``result()`` raises ``Cancelled``; a call already
        answered keeps its result."""
        if not self.done:
            await self._cancel(reason)

    @property
    def done(self) -> bool:
        return self._result.done()

    def _failure(self) -> Exception:
        return failure(self._result.result())

    def heard_pending(self, pending: ToolCallPending) -> None:
        if not self._pending.done():
            self._pending.set_result(pending)

    def heard_progress(self, update: ToolCallProgress) -> None:
        # The same update twice is one update heard again: it carries the time it was made.
        if not self.done and update not in self._updates:
            self._updates.append(update)
            self._tell()

    def heard_result(self, result: ToolCallResult) -> None:
        if not self._result.done():
            self._result.set_result(result)
            self._tell()

    def _tell(self) -> None:
        """Wake the loops waiting in ``progress()``; the next wait makes a new event."""
        if self._news is not None:
            self._news.set()
            self._news = None
