"""Midcall's tools as LiveKit Agents function tools (livekit-agents 1.8).

    tools = MidcallTools(mc, "salon-bot", "conv-42")
    agent = Agent(instructions="...", tools=await tools.function_tools())
    await tools.keep_current(agent)  # the registry's changes reach the agent
    tools.end_with(session)  # the session's close ends the conversation in Midcall

Each tool says its filler through ``session.say`` as soon as the call is
pending, hands each progress its API reports to the LLM through ``RunContext.update``
(said through ``session.say`` where it asks to be), returns the result (or the
tool's message for the agent) to the LLM, and raises ``ToolError`` with the
speakable message when the call fails.
"""

import asyncio
import json
from collections.abc import Coroutine
from typing import Any

from livekit.agents import Agent, AgentSession, RunContext, llm

from midcall.adapters.conversation import ConversationCalls, answered
from midcall.client import AgentTools, CallFailed, MidcallClient
from shared.contract.events import ToolCallProgress, ToolCallResult
from shared.contract.manifest import llm_parameters
from shared.contract.tools import Tool

MidcallTool = llm.RawFunctionTool[..., Any]
# What Midcall is told when LiveKit cancels a tool: the LLM called its cancel tool, or the
# agent's activity ended (a handoff, the session's close) while the call was running.
CANCELLED_BY_LIVEKIT = "cancelled by the LiveKit agent"


def raw_schema(tool: Tool) -> dict[str, Any]:
    """The tool as the LLM sees it: without the parameters bound from the call's context."""
    return {"name": tool.name, "description": tool.description, "parameters": llm_parameters(tool)}


def for_the_llm(result: ToolCallResult) -> str:
    """The tool's message for the agent when it has one, else its result as JSON (LiveKit
    would give the LLM Python's repr of anything that is not a string)."""
    if result.agent_message is not None:
        return result.agent_message
    if isinstance(result.result, str):
        return result.result
    return json.dumps(result.result, ensure_ascii=False)


class MidcallTools(ConversationCalls):
    """One conversation's Midcall tools for a LiveKit ``Agent`` (see ``ConversationCalls``)."""

    def __init__(
        self,
        mc: MidcallClient,
        agent_id: str,
        conversation_id: str,
        *,
        context: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(mc, agent_id, conversation_id, context=context)
        self._names: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def function_tools(self) -> list[MidcallTool]:
        """One raw function tool per tool of the agent, as the registry has them now."""
        return self._built(await self.mc.tools(self.agent_id))

    async def keep_current(self, agent: Agent) -> None:
        """Follow the registry: ``agent``'s Midcall tools are replaced at each change, its
        other tools kept."""
        watched = await self.mc.tools(self.agent_id)
        watched.on_change(lambda changed: self._spawn(self._update(agent, changed)))

    def end_with(self, session: AgentSession[Any]) -> None:
        """When ``session`` closes, the conversation ends in Midcall (``aclose``)."""
        session.on("close", lambda _: self._spawn(self.aclose()))

    def _built(self, tools: AgentTools) -> list[MidcallTool]:
        self._names = set(tools.names)
        return [self._function_tool(tool) for tool in tools.tools]

    def _function_tool(self, tool: Tool) -> MidcallTool:
        # LiveKit binds RunContext by the annotation, read with get_type_hints: it must
        # name a class importable from this module.
        async def handler(raw_arguments: dict[str, Any], context: RunContext[Any]) -> str:
            return await self._run(tool.name, raw_arguments, context)

        # Every Midcall call may be cancelled, so LiveKit may cancel every tool.
        return llm.function_tool(
            handler, raw_schema=raw_schema(tool), flags=llm.ToolFlag.CANCELLABLE
        )

    async def _run(self, tool: str, arguments: dict[str, Any], context: RunContext[Any]) -> str:
        async def say(words: str) -> None:
            context.session.say(words)

        async def report(update: ToolCallProgress) -> None:
            # LiveKit 1.8's progress update: the first hands the LLM the message as the
            # tool's output for now and lets it talk on (the result then comes as a reply
            # of its own), later ones are added to its context. Silent: the LLM does not
            # answer it, as a progress not to be said now stays unsaid and one to be said
            # was said verbatim; the LLM has it when the caller asks.
            await context.update(update.message, silent=True)

        call_id = context.function_call.call_id
        try:
            async with self.placed(tool, arguments, call_id, CANCELLED_BY_LIVEKIT) as call:
                return for_the_llm(await answered(call, say, report))
        except CallFailed as failed:
            raise llm.ToolError(failed.message) from failed

    async def _update(self, agent: Agent, changed: AgentTools) -> None:
        others = [tool for tool in agent.tools if tool.id not in self._names]
        await agent.update_tools([*others, *self._built(changed)])

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` from LiveKit's and the SDK's callbacks, which are not awaited;
        the task is kept until it is done."""
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
