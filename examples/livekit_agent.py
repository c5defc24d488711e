"""A LiveKit agent whose tools are Midcall's: `python examples/livekit_agent.py --demo`.

Needs `midcall up` running in this directory (it reads ./.midcall). With
--demo it registers one Python tool for the agent `livekit-demo` and runs one
call of it through the adapter exactly as LiveKit runs an LLM's function call,
in a text-only session: no LLM, microphone or LiveKit server. Without --demo it
is a LiveKit worker (`python examples/livekit_agent.py dev`), which needs
LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET and the models below.
"""

import asyncio
import secrets
import sys

from livekit.agents import Agent, AgentServer, AgentSession, JobContext, RunContext, cli, llm
from livekit.agents.voice.events import ConversationItemAddedEvent
from livekit.agents.voice.speech_handle import SpeechHandle

from midcall.adapters.livekit import MidcallTools
from salon_demo import INSTRUCTIONS, client, register  # beside this file

AGENT = "livekit-demo"


async def demo() -> None:
    """What an LLM asking for `opening_hours(day="Tuesday")` sets off, without the LLM."""
    async with client() as mc:
        await register(mc, AGENT)
        midcall = MidcallTools(mc, AGENT, f"conv-{secrets.token_hex(4)}")
        tools = await midcall.function_tools()
        async with AgentSession() as session:
            session.on("conversation_item_added", said)
            await session.start(Agent(instructions=INSTRUCTIONS, tools=list(tools)))
            call = llm.FunctionToolCall(
                name="opening_hours",
                arguments='{"day": "Tuesday"}',
                call_id=f"call_{secrets.token_hex(6)}",
            )
            context = RunContext(
                session=session,
                speech_handle=SpeechHandle.create(),
                function_call=llm.FunctionCall(
                    call_id=call.call_id, name=call.name, arguments=call.arguments
                ),
            )
            done = await llm.execute_function_call(call, llm.ToolContext(tools), call_ctx=context)
            await session.drain()  # the filler said to the end, however fast the answer came
            print(f"the LLM reads: {done.fnc_call_out.output}")
        await midcall.aclose()  # the conversation ends in Midcall


def said(event: ConversationItemAddedEvent) -> None:
    if isinstance(event.item, llm.ChatMessage) and event.item.role == "assistant":
        print(f"the agent says: {event.item.text_content}")


server = AgentServer()


@server.rtc_session()
async def entrypoint(ctx: JobContext) -> None:
    """One LiveKit room is one Midcall conversation."""
    mc = client()
    await mc.__aenter__()
    midcall = MidcallTools(mc, AGENT, ctx.room.name)

    async def shutdown() -> None:
        await midcall.aclose()
        await mc.__aexit__(None, None, None)

    ctx.add_shutdown_callback(shutdown)
    agent = Agent(instructions=INSTRUCTIONS, tools=list(await midcall.function_tools()))
    await midcall.keep_current(agent)
    session: AgentSession[None] = AgentSession(
        stt="deepgram/nova-3", llm="openai/gpt-4.1-mini", tts="cartesia/sonic-2"
    )
    midcall.end_with(session)
    await session.start(agent=agent, room=ctx.room)


if __name__ == "__main__":
    if "--demo" in sys.argv:
        asyncio.run(demo())
    else:
        cli.run_app(server)
