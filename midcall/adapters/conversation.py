"""What every framework adapter does with Midcall: one conversation's calls.

A framework's tool call becomes a Midcall call with the framework's own call
id (a call the framework runs again runs once in Midcall), its filler is
what the pending says, each progress its API reports reaches the framework
(and is said where the API asks), and a framework that cancels the tool
cancels the call; the conversation ends once, when the framework's session does.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from midcall.client import Call, MidcallClient
from shared.contract.events import ToolCallPending, ToolCallProgress, ToolCallResult

# How a framework says words verbatim, and how it hands a progress to its LLM.
Say = Callable[[str], Awaitable[None]]
Report = Callable[[ToolCallProgress], Awaitable[None]]


class ConversationCalls:
    """``context``: the call's context (caller, session), which binds the tools' context
    parameters. The ``MidcallClient`` needs ``registry_url`` and ``api_key`` for the
    agent's tools."""

    def __init__(
        self,
        mc: MidcallClient,
        agent_id: str,
        conversation_id: str,
        *,
        context: dict[str, Any] | None = None,
    ) -> None:
        self.mc = mc
        self.agent_id = agent_id
        self.conversation_id = conversation_id
        self.context = context
        self._ended = False

    @contextlib.asynccontextmanager
    async def placed(
        self,
        tool: str,
        arguments: dict[str, Any],
        call_id: str,
        cancelled_by: str,
        deadline: float | None = None,
    ) -> AsyncIterator[Call]:
        """The call, placed. Where the framework cancels its tool, from the placing on, the
        call is cancelled in Midcall too (``cancelled_by`` its reason), even as the
        cancellation goes on: cancelled while it was being placed, it may have been stored
        with no handle given back, so it is cancelled by its id."""
        try:
            yield await self.mc.call(
                self.agent_id,
                self.conversation_id,
                tool,
                arguments,
                context=self.context,
                deadline=deadline,
                call_id=call_id,
            )
        except asyncio.CancelledError:
            await asyncio.shield(self.mc.cancel(self.conversation_id, call_id, cancelled_by))
            raise

    async def aclose(self) -> None:
        """End the conversation, once: its calls still running are cancelled, billing
        closes it."""
        if not self._ended:
            self._ended = True
            await self.mc.end(self.conversation_id)


def filler(pending: ToolCallPending) -> str | None:
    """What to say while the call runs: nothing for a muted call, and nothing where the
    tool leaves the words to the LLM (it phrases them alongside its tool call)."""
    return pending.speech if pending.speak and pending.speech and not pending.muted else None


async def answered(call: Call, say: Say, report: Report) -> ToolCallResult:
    """The call's result (its ``CallFailed`` raised). Meanwhile its filler is said once it
    is pending, and each progress is reported as it comes, said first where its API asks
    for that, unless the call is muted (the agent stays silent until the result)."""
    pending = await call.pending()
    words = filler(pending)
    if words is not None:
        await say(words)
    async for update in call.progress():
        if update.speak and not pending.muted:
            await say(update.message)
        await report(update)
    return await call.result()
