"""The LiveKit Agents adapter against the fabric as ``midcall up`` runs it, with no LLM.

Given an agent's tools in the registry, each becomes a raw function tool whose
schema is what the LLM may fill; when LiveKit executes one, its filler is said
through the session, each progress reaches the LLM through ``RunContext.update``
(silent, and said through the session where it asks to be), the LLM reads the
result, a failed call raises ``ToolError`` with the message to speak, and a
cancelled tool cancels its call.
The agent's tools follow the registry, and the session's close ends the
conversation. Tools run through ``llm.execute_function_call`` with a real
``AgentSession`` (text only) in their ``RunContext``.
"""

import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import pytest_asyncio
from livekit.agents import Agent, AgentSession, RunContext, llm
from livekit.agents.voice.events import ConversationItemAddedEvent, SpeechCreatedEvent
from livekit.agents.voice.speech_handle import SpeechHandle
from livekit.agents.voice.tool_executor import UPDATE_TEMPLATE

from midcall.adapters.livekit import CANCELLED_BY_LIVEKIT, MidcallTools
from midcall.client import Call, Cancelled
from shared.contract import subjects
from shared.contract.events import ConversationEnded
from tests.support.running import (
    BOOKED,
    Running,
    agent_tools,
    conversation,
    fabric_up,
    lookup_tool,
    reports,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")
AGENT = "livekit-bot"
CALLER = {"From": "+12223334444"}
WAIT_S = 15.0
ORDER = {"type": "object", "properties": {"order": {"type": "string"}}, "required": ["order"]}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def running(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Running]:
    async with fabric_up(tmp_path_factory, "livekit") as running:
        await running.add_tools(AGENT, *agent_tools(running.api.url))
        yield running


class Spoken:
    """What the session said: each ``say`` counted as it is asked, its text once played."""

    def __init__(self, session: AgentSession[Any]) -> None:
        self.asked = 0
        self.lines: asyncio.Queue[str] = asyncio.Queue()
        session.on("speech_created", self._created)
        session.on("conversation_item_added", self._added)

    def _created(self, event: SpeechCreatedEvent) -> None:
        self.asked += event.source == "say"

    def _added(self, event: ConversationItemAddedEvent) -> None:
        item = event.item
        if isinstance(item, llm.ChatMessage) and item.role == "assistant":
            self.lines.put_nowait(item.text_content or "")


@asynccontextmanager
async def session_of(agent: Agent) -> AsyncIterator[AgentSession[Any]]:
    """A real session in text mode: no room, no models, ``say`` plays at once."""
    async with AgentSession() as session:
        await session.start(agent)
        yield session


async def execute(
    tools: list[llm.RawFunctionTool[..., Any]],
    session: AgentSession[Any],
    name: str,
    arguments: str,
    call_id: str | None = None,
) -> llm.FunctionCallResult:
    """Run a tool as LiveKit does for an LLM's function call."""
    called = llm.FunctionToolCall(
        name=name, arguments=arguments, call_id=call_id or f"call_{secrets.token_hex(6)}"
    )
    function_call = llm.FunctionCall(call_id=called.call_id, name=name, arguments=arguments)
    context = RunContext(
        session=session, speech_handle=SpeechHandle.create(), function_call=function_call
    )
    async with asyncio.timeout(WAIT_S):
        return await llm.execute_function_call(called, llm.ToolContext(tools), call_ctx=context)


async def test_each_tool_is_a_cancellable_raw_function_tool_with_what_the_llm_fills(
    running: Running,
) -> None:
    async with running.client() as mc:
        tools = await MidcallTools(mc, AGENT, conversation()).function_tools()

    described = "Looks an order up."
    assert [(tool.info.raw_schema, tool.info.flags) for tool in tools] == [
        (
            {"name": name, "description": described, "parameters": ORDER},
            llm.ToolFlag.CANCELLABLE,
        )
        for name in ["Broken", "Lookup", "Slow", "Track"]
    ]


async def test_a_call_says_its_filler_and_the_llm_reads_its_result_once(
    running: Running,
) -> None:
    before = len([r for r in running.api.received if r.path == "/lookup"])
    async with running.client() as mc:
        tools = await MidcallTools(mc, AGENT, conversation(), context=CALLER).function_tools()
        async with session_of(Agent(instructions="Help.", tools=list(tools))) as session:
            spoken = Spoken(session)
            first = await execute(tools, session, "Lookup", '{"order": "o-1"}', "call_lk1")
            async with asyncio.timeout(WAIT_S):
                filler = await spoken.lines.get()
            # LiveKit runs the same function call again: Midcall does not.
            again = await execute(tools, session, "Lookup", '{"order": "o-1"}', "call_lk1")

    lookups = [r for r in running.api.received if r.path == "/lookup"]
    assert filler == "Let me look that up."
    assert (first.fnc_call_out.output, first.fnc_call_out.is_error) == (
        '{"order": "o-1", "total": 42}',
        False,
    )
    assert again.fnc_call_out.output == first.fnc_call_out.output
    assert len(lookups) == before + 1
    assert lookups[-1].body == b'{"order":"o-1","From":"+12223334444"}'


async def test_the_llm_reads_the_tools_message_for_the_agent_and_nothing_is_said(
    running: Running,
) -> None:
    async with running.client() as mc:
        tools = await MidcallTools(mc, AGENT, conversation()).function_tools()
        async with session_of(Agent(instructions="Help.", tools=list(tools))) as session:
            spoken = Spoken(session)
            out = await execute(tools, session, "Track", '{"order": "o-1"}')

    assert out.fnc_call_out.output == "Order o-1 left the warehouse today."
    assert spoken.asked == 0


async def test_a_calls_progress_reaches_the_llm_through_update_and_is_said_where_it_asks(
    running: Running,
) -> None:
    agent, release = await running.held_agent()
    conv, call_id = conversation(), f"call_{secrets.token_hex(6)}"
    async with running.client() as mc:
        tools = await MidcallTools(mc, agent, conv).function_tools()
        async with session_of(Agent(instructions="Help.", tools=list(tools))) as session:
            spoken = Spoken(session)
            before = len(running.api.received)
            booking = asyncio.create_task(
                execute(tools, session, "Book", '{"order": "o-1"}', call_id)
            )
            await running.api.wait_for(before + 1)
            await running.publish_progress(*reports(call_id, conv))
            release.set()
            out = await booking
            async with asyncio.timeout(WAIT_S):
                lines = [await spoken.lines.get(), await spoken.lines.get()]

    def updated(message: str) -> str:
        return UPDATE_TEMPLATE.format(function_name="Book", call_id=call_id, message=message)

    assert lines == ["Let me look that up.", "Found a slot at ten."]
    assert spoken.asked == 2
    assert [(c.call_id, o.output, o.reply_required) for c, o in out.fnc_call_updates] == [
        (call_id, updated("Searching the diary."), False),
        (f"{call_id}_update_1", updated("Found a slot at ten."), False),
    ]
    assert json.loads(out.fnc_call_out.output) == BOOKED


@pytest.mark.parametrize(
    ("tool", "arguments", "message"),
    [
        pytest.param(
            "Broken",
            '{"order": "o-1"}',
            "The Broken service had a problem. Tell the caller to try again in a few minutes. "
            "(HTTP 500)",
            id="api-500",
        ),
        pytest.param(
            "Lookup",
            '{"order": 7}',
            "The arguments for Lookup are not valid: 'order' 7 is not of type 'string'. "
            "Ask the caller for the missing or corrected details and try again.",
            id="invalid-arguments",
        ),
    ],
)
async def test_a_failed_call_raises_tool_error_with_its_speakable_message(
    running: Running, tool: str, arguments: str, message: str
) -> None:
    async with running.client() as mc:
        tools = await MidcallTools(mc, AGENT, conversation(), context=CALLER).function_tools()
        async with session_of(Agent(instructions="Help.", tools=list(tools))) as session:
            out = await execute(tools, session, tool, arguments)

    assert type(out.raw_exception) is llm.ToolError
    assert (out.fnc_call_out.output, out.fnc_call_out.is_error) == (message, True)


def signalling(call: Callable[..., Awaitable[Call]], placing: asyncio.Event) -> Any:
    """``call``, which sets ``placing`` as it starts placing a call."""

    async def signalled(*args: Any, **kwargs: Any) -> Call:
        placing.set()
        return await call(*args, **kwargs)

    return signalled


@pytest.mark.parametrize("when", ["placing", "running"])
async def test_a_tool_livekit_cancels_cancels_its_midcall_call(
    running: Running, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    conv, call_id = conversation(), f"call_{secrets.token_hex(6)}"
    async with running.client() as mc:
        placing = asyncio.Event()
        monkeypatch.setattr(mc, "call", signalling(mc.call, placing))
        tools = await MidcallTools(mc, AGENT, conv).function_tools()
        async with session_of(Agent(instructions="Help.", tools=list(tools))) as session:
            before = len(running.api.received)
            running_tool = asyncio.create_task(
                execute(tools, session, "Slow", '{"order": "o-1"}', call_id)
            )
            # Cancelled before its placing is confirmed (the call may be stored by then),
            # or while its API is called.
            if when == "placing":
                await placing.wait()
            else:
                await running.api.wait_for(before + 1)
            running_tool.cancel()
            with pytest.raises(asyncio.CancelledError):
                await running_tool
            # The client's handle of that call id: what Midcall answered it.
            call = await mc.call(AGENT, conv, "Slow", {"order": "o-1"}, call_id=call_id)
            async with asyncio.timeout(WAIT_S):
                with pytest.raises(Cancelled) as cancelled:
                    await call.result()

    assert cancelled.value.details == {"reason": CANCELLED_BY_LIVEKIT}


class Followed(Agent):
    """An agent that tells the test each time its tools are replaced."""

    def __init__(self, tools: list[llm.Tool | llm.Toolset]) -> None:
        super().__init__(instructions="Help.", tools=tools)
        self.updates: asyncio.Queue[list[str]] = asyncio.Queue()

    async def update_tools(self, tools: list[llm.Tool | llm.Toolset]) -> None:
        await super().update_tools(tools)
        self.updates.put_nowait([tool.id for tool in self.tools])


async def test_the_agents_tools_follow_the_registry_and_its_own_are_kept(
    running: Running,
) -> None:
    agent_id = f"livekit-{secrets.token_hex(3)}"
    await running.add_tools(agent_id, lookup_tool(f"{running.api.url}/lookup"))

    @llm.function_tool
    async def transfer() -> str:
        """Transfers the caller to a human."""
        return "transferred"

    async with running.client() as mc:
        midcall = MidcallTools(mc, agent_id, conversation())
        agent = Followed([transfer, *await midcall.function_tools()])
        async with session_of(agent):
            await midcall.keep_current(agent)
            await running.add_tools(agent_id, lookup_tool(f"{running.api.url}/track", "Track"))
            async with asyncio.timeout(WAIT_S):
                updated = await agent.updates.get()
            tracked = await execute(
                [tool for tool in agent.tools if isinstance(tool, llm.RawFunctionTool)],
                agent.session,
                "Track",
                '{"order": "o-1"}',
            )

    assert updated == ["transfer", "Lookup", "Track"]
    assert tracked.fnc_call_out.output == "Order o-1 left the warehouse today."


async def test_closing_the_session_ends_the_conversation(running: Running) -> None:
    conv = conversation()
    async with running.client() as mc:
        ended = await mc.nc.subscribe(subjects.ended(conv))
        midcall = MidcallTools(mc, AGENT, conv)
        async with session_of(Agent(instructions="Help.")) as session:
            midcall.end_with(session)
        heard = await ended.next_msg(timeout=WAIT_S)

    assert ConversationEnded.model_validate_json(heard.data).conversation_id == conv
