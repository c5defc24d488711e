"""The Pipecat adapter against the fabric as ``midcall up`` runs it, with no LLM.

Given an agent's tools in the registry, the ``ToolsSchema`` holds what the LLM
may fill; when the LLM service runs a function call (``run_function_calls``, as
after an LLM's answer, in a running pipeline), the filler is pushed as a
``TTSSpeakFrame``, the result reaches ``result_callback`` with whether the LLM
runs on it, a tool's message for the agent is spoken verbatim, and a failed
call hands the LLM the message to say. Each progress of an async call is an
intermediate result the LLM takes in without answering, and one that asks to be
said is pushed as a ``TTSSpeakFrame``. An interruption or the pipeline's
teardown cancels the Midcall call, and the pipeline's end ends the conversation.
"""

import asyncio
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    FunctionCallCancelFrame,
    FunctionCallFromLLM,
    FunctionCallResultFrame,
    FunctionCallResultProperties,
    InterruptionFrame,
    TTSSpeakFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.openai.llm import OpenAILLMService
from pipecat.workers.runner import WorkerRunner

from midcall.adapters.pipecat import CANCELLED_BY_PIPECAT, MidcallFunctions
from midcall.client import Cancelled
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
AGENT = "pipecat-bot"
CALLER = {"From": "+12223334444"}
WAIT_S = 15.0
FILLER = "Let me look that up."
SAID = (TTSSpeakFrame, FunctionCallResultFrame, FunctionCallCancelFrame)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def running(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Running]:
    async with fabric_up(tmp_path_factory, "pipecat") as running:
        url = running.api.url
        quiet = {
            **lookup_tool(f"{url}/lookup", "Quiet"),
            "speech": {"on_send": FILLER, "on_receive": False},
        }
        await running.add_tools(AGENT, *agent_tools(url), quiet)
        yield running


class Heard(FrameProcessor):
    """The end of the pipeline: what the LLM service pushed for its function calls."""

    def __init__(self) -> None:
        super().__init__()
        self.frames: asyncio.Queue[Frame] = asyncio.Queue()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, SAID):
            self.frames.put_nowait(frame)
        await self.push_frame(frame, direction)

    async def next_frame(self) -> Frame:
        async with asyncio.timeout(WAIT_S):
            return await self.frames.get()


@dataclass
class Bot:
    llm: OpenAILLMService
    worker: PipelineWorker
    heard: Heard

    async def llm_calls(self, name: str, arguments: dict[str, Any], call_id: str = "") -> str:
        """The LLM's answer asks for ``name``: the service runs it as a function call."""
        call_id = call_id or f"call_{secrets.token_hex(6)}"
        called = FunctionCallFromLLM(name, call_id, arguments, LLMContext())
        await self.llm.run_function_calls([called])
        return call_id


@asynccontextmanager
async def bot_of(midcall: MidcallFunctions, end: Frame | None = None) -> AsyncIterator[Bot]:
    """A running pipeline of an LLM service (never asked to infer) and ``Heard``, whose
    function calls ``midcall`` handles; it ends with ``end`` (an ``EndFrame`` by default)."""
    llm = OpenAILLMService(api_key="never-used")
    midcall.register(llm)
    heard = Heard()
    worker = PipelineWorker(Pipeline([llm, heard]), cancel_on_idle_timeout=False)
    started = asyncio.Event()
    worker.add_event_handler("on_pipeline_started", lambda *_: started.set())
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    runs = asyncio.create_task(runner.run())
    async with asyncio.timeout(WAIT_S):
        await started.wait()
    try:
        yield Bot(llm, worker, heard)
    finally:
        await worker.queue_frame(end or EndFrame())
        async with asyncio.timeout(WAIT_S):
            await runs


def said(frame: Frame) -> tuple[Any, ...]:
    """A frame as the test compares it: its text, its result and ``run_llm``, or an
    intermediate result and all its properties."""
    if isinstance(frame, TTSSpeakFrame):
        return ("speak", frame.text)
    if isinstance(frame, FunctionCallResultFrame):
        assert frame.properties is not None
        if not frame.properties.is_final:
            return ("update", frame.tool_call_id, frame.result, frame.properties)
        return ("result", frame.tool_call_id, frame.result, frame.properties.run_llm)
    assert isinstance(frame, FunctionCallCancelFrame)
    return ("cancelled", frame.tool_call_id)


async def test_the_tools_schema_holds_what_the_llm_fills(running: Running) -> None:
    async with running.client() as mc:
        schema = await MidcallFunctions(mc, AGENT, conversation()).tools_schema()

    assert [(f.name, f.description, f.properties, f.required) for f in schema.standard_tools] == [
        (name, "Looks an order up.", {"order": {"type": "string"}}, ["order"])
        for name in ["Broken", "Lookup", "Quiet", "Slow", "Track"]
    ]


async def test_a_call_pushes_its_filler_and_the_llm_runs_on_its_result_once(
    running: Running,
) -> None:
    before = len([r for r in running.api.received if r.path == "/lookup"])
    async with running.client() as mc:
        midcall = MidcallFunctions(mc, AGENT, conversation(), context=CALLER)
        async with bot_of(midcall) as bot:
            call_id = await bot.llm_calls("Lookup", {"order": "o-1"})
            first = [said(await bot.heard.next_frame()), said(await bot.heard.next_frame())]
            # Pipecat runs the same tool call again: Midcall does not.
            await bot.llm_calls("Lookup", {"order": "o-1"}, call_id)
            again = [said(await bot.heard.next_frame()), said(await bot.heard.next_frame())]

    lookups = [r for r in running.api.received if r.path == "/lookup"]
    assert first == [("speak", FILLER), ("result", call_id, {"order": "o-1", "total": 42}, True)]
    assert again == first
    assert len(lookups) == before + 1
    assert lookups[-1].body == b'{"order":"o-1","From":"+12223334444"}'


@pytest.mark.parametrize(
    ("tool", "expected"),
    [
        pytest.param(
            "Track",
            [
                ("speak", "Order o-1 left the warehouse today."),
                ("result", {"agent_message": "Order o-1 left the warehouse today."}, False),
            ],
            id="agent-message-spoken-verbatim",
        ),
        pytest.param(
            "Quiet",
            [("speak", FILLER), ("result", {"order": "o-1", "total": 42}, False)],
            id="silent-on-receive",
        ),
        pytest.param(
            "Broken",
            [
                ("speak", FILLER),
                (
                    "result",
                    {
                        "error": "The Broken service had a problem. Tell the caller to try "
                        "again in a few minutes. (HTTP 500)"
                    },
                    True,
                ),
            ],
            id="failed-call-message-for-the-llm",
        ),
    ],
)
async def test_what_is_spoken_and_whether_the_llm_runs_on_the_result(
    running: Running, tool: str, expected: list[tuple[Any, ...]]
) -> None:
    async with running.client() as mc:
        midcall = MidcallFunctions(mc, AGENT, conversation(), context=CALLER)
        async with bot_of(midcall) as bot:
            call_id = await bot.llm_calls(tool, {"order": "o-1"})
            heard = [said(await bot.heard.next_frame()) for _ in expected]

    assert heard == [
        (kind, call_id, *rest) if kind == "result" else (kind, *rest) for kind, *rest in expected
    ]


async def test_a_call_refused_at_once_hands_the_llm_its_message_and_pushes_no_filler(
    running: Running,
) -> None:
    async with running.client() as mc:
        midcall = MidcallFunctions(mc, AGENT, conversation(), context=CALLER)
        async with bot_of(midcall) as bot:
            call_id = await bot.llm_calls("Lookup", {"order": 7})
            heard = said(await bot.heard.next_frame())

    message = (
        "The arguments for Lookup are not valid: 'order' 7 is not of type 'string'. "
        "Ask the caller for the missing or corrected details and try again."
    )
    assert heard == ("result", call_id, {"error": message}, True)


async def test_an_interruption_cancels_the_midcall_call(running: Running) -> None:
    conv = conversation()
    async with running.client() as mc:
        midcall = MidcallFunctions(mc, AGENT, conv)
        async with bot_of(midcall) as bot:
            before = len(running.api.received)
            call_id = await bot.llm_calls("Slow", {"order": "o-1"})
            filler = said(await bot.heard.next_frame())
            await running.api.wait_for(before + 1)
            await bot.worker.queue_frame(InterruptionFrame())
            interrupted = said(await bot.heard.next_frame())
            # The client's handle of that call id: what Midcall answered it.
            call = await mc.call(AGENT, conv, "Slow", {"order": "o-1"}, call_id=call_id)
            async with asyncio.timeout(WAIT_S):
                with pytest.raises(Cancelled) as cancelled:
                    await call.result()

    assert [filler, interrupted] == [("speak", FILLER), ("cancelled", call_id)]
    assert cancelled.value.details == {"reason": CANCELLED_BY_PIPECAT}


async def test_the_pipelines_teardown_cancels_the_calls_still_running(
    running: Running,
) -> None:
    conv = conversation()
    async with running.client() as mc:
        # Async calls are not cancelled on interruption: the teardown cancels them.
        midcall = MidcallFunctions(mc, AGENT, conv, cancel_on_interruption=False)
        async with bot_of(midcall, end=CancelFrame()) as bot:
            before = len(running.api.received)
            call_id = await bot.llm_calls("Slow", {"order": "o-1"})
            await running.api.wait_for(before + 1)
        call = await mc.call(AGENT, conv, "Slow", {"order": "o-1"}, call_id=call_id)
        async with asyncio.timeout(WAIT_S):
            with pytest.raises(Cancelled) as cancelled:
                await call.result()

    assert cancelled.value.details == {"reason": CANCELLED_BY_PIPECAT}


@pytest.mark.parametrize("end", [EndFrame(), CancelFrame()], ids=["ended", "cancelled"])
async def test_the_pipelines_end_ends_the_conversation(running: Running, end: Frame) -> None:
    conv = conversation()
    async with running.client() as mc:
        ended = await mc.nc.subscribe(subjects.ended(conv))
        midcall = MidcallFunctions(mc, AGENT, conv)
        async with bot_of(midcall, end=end) as bot:
            midcall.end_with(bot.worker)
        heard = await ended.next_msg(timeout=WAIT_S)

    assert ConversationEnded.model_validate_json(heard.data).conversation_id == conv


async def test_the_calls_deadline_is_timeout_secs_and_the_llm_says_midcalls_timeout(
    running: Running,
) -> None:
    async with running.client() as mc:
        midcall = MidcallFunctions(mc, AGENT, conversation(), timeout_secs=0.3)
        async with bot_of(midcall) as bot:
            call_id = await bot.llm_calls("Slow", {"order": "o-1"})
            heard = [said(await bot.heard.next_frame()), said(await bot.heard.next_frame())]

    message = (
        "The Slow service did not answer within 0.3 seconds. "
        "Tell the caller it is taking too long and offer to try again."
    )
    # Pipecat's own timeout, a little later, did not cut the call short.
    assert heard == [("speak", FILLER), ("result", call_id, {"error": message}, True)]


UPDATE = FunctionCallResultProperties(is_final=False, run_llm=False)


@pytest.mark.parametrize(
    ("cancel_on_interruption", "expected"),
    [
        pytest.param(
            False,
            [
                ("update", {"message": "Searching the diary.", "percent": 20.0}, UPDATE),
                ("speak", "Found a slot at ten."),
                ("update", {"message": "Found a slot at ten."}, UPDATE),
                ("result", BOOKED, True),
            ],
            id="async-call-intermediate-results",
        ),
        pytest.param(
            True,
            [("speak", "Found a slot at ten."), ("result", BOOKED, True)],
            id="sync-call-says-only",
        ),
    ],
)
async def test_a_calls_progress_is_an_intermediate_result_and_said_where_it_asks(
    running: Running, cancel_on_interruption: bool, expected: list[tuple[Any, ...]]
) -> None:
    agent, release = await running.held_agent()
    conv = conversation()
    async with running.client() as mc:
        midcall = MidcallFunctions(mc, agent, conv, cancel_on_interruption=cancel_on_interruption)
        async with bot_of(midcall) as bot:
            before = len(running.api.received)
            call_id = await bot.llm_calls("Book", {"order": "o-1"})
            filler = said(await bot.heard.next_frame())
            await running.api.wait_for(before + 1)
            await running.publish_progress(*reports(call_id, conv))
            release.set()
            heard = [said(await bot.heard.next_frame()) for _ in expected]

    assert filler == ("speak", FILLER)
    assert heard == [
        (kind, call_id, *rest) if kind != "speak" else (kind, *rest) for kind, *rest in expected
    ]
