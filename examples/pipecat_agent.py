"""A Pipecat bot whose tools are Midcall's: `python examples/pipecat_agent.py --demo`.

Needs `midcall up` running in this directory (it reads ./.midcall). With
--demo it registers one Python tool for the agent `pipecat-demo` and runs one
call of it through the adapter exactly as Pipecat runs an LLM's function call,
in a running pipeline whose LLM service is never asked to infer: no LLM,
microphone or network. Without --demo it is a voice bot for Pipecat's
development runner (`python examples/pipecat_agent.py`, then open the page it
prints), which needs `pip install 'pipecat-ai[runner,webrtc,silero,deepgram,cartesia]'`
and DEEPGRAM_API_KEY, OPENAI_API_KEY and CARTESIA_API_KEY.
"""

import asyncio
import os
import secrets
import sys

from loguru import logger
from pipecat.frames.frames import (
    EndFrame,
    Frame,
    FunctionCallFromLLM,
    FunctionCallResultFrame,
    TTSSpeakFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.openai.llm import OpenAILLMService
from pipecat.workers.runner import WorkerRunner

from midcall.adapters.pipecat import MidcallFunctions
from salon_demo import INSTRUCTIONS, client, register  # beside this file

AGENT = "pipecat-demo"


class Printed(FrameProcessor):
    """Where the TTS would be: prints what the bot would say and what the LLM would read."""

    def __init__(self) -> None:
        super().__init__()
        self.answered = asyncio.Event()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, TTSSpeakFrame):
            print(f"the bot says: {frame.text}")
        elif isinstance(frame, FunctionCallResultFrame):
            run_llm = frame.properties.run_llm if frame.properties else None
            print(f"the LLM reads: {frame.result} (run_llm={run_llm})")
            self.answered.set()
        await self.push_frame(frame, direction)


async def demo() -> None:
    """What an LLM asking for `opening_hours(day="Tuesday")` sets off, without the LLM."""
    logger.remove()  # Pipecat logs every frame's way at DEBUG
    logger.add(sys.stderr, level="WARNING")
    async with client() as mc:
        await register(mc, AGENT)
        midcall = MidcallFunctions(mc, AGENT, f"conv-{secrets.token_hex(4)}")
        context = LLMContext([{"role": "system", "content": INSTRUCTIONS}])
        context.set_tools(await midcall.tools_schema())
        llm = OpenAILLMService(api_key="never-used")  # no inference runs in the demo
        midcall.register(llm)
        printed = Printed()
        worker = PipelineWorker(Pipeline([llm, printed]), cancel_on_idle_timeout=False)
        midcall.end_with(worker)  # the conversation ends in Midcall with the pipeline

        @worker.event_handler("on_pipeline_started")
        async def call_a_tool(worker: PipelineWorker, frame: Frame) -> None:
            asked = FunctionCallFromLLM(
                "opening_hours", f"call_{secrets.token_hex(6)}", {"day": "Tuesday"}, context
            )
            await llm.run_function_calls([asked])
            await printed.answered.wait()
            await worker.queue_frame(EndFrame())

        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(worker)
        await runner.run()


async def bot(runner_args) -> None:
    """One session of Pipecat's development runner is one Midcall conversation."""
    from pipecat.audio.vad.silero import SileroVADAnalyzer
    from pipecat.processors.aggregators.llm_response_universal import (
        LLMContextAggregatorPair,
        LLMUserAggregatorParams,
    )
    from pipecat.runner.utils import create_transport
    from pipecat.services.cartesia.tts import CartesiaTTSService
    from pipecat.services.deepgram.stt import DeepgramSTTService
    from pipecat.transports.base_transport import TransportParams

    transport = await create_transport(
        runner_args,
        {"webrtc": lambda: TransportParams(audio_in_enabled=True, audio_out_enabled=True)},
    )
    async with client() as mc:
        midcall = MidcallFunctions(mc, AGENT, runner_args.session_id or secrets.token_hex(8))
        context = LLMContext([{"role": "system", "content": INSTRUCTIONS}])
        context.set_tools(await midcall.tools_schema())
        llm = OpenAILLMService(api_key=os.environ["OPENAI_API_KEY"], model="gpt-4.1-mini")
        midcall.register(llm)
        aggregators = LLMContextAggregatorPair(
            context, user_params=LLMUserAggregatorParams(vad_analyzer=SileroVADAnalyzer())
        )
        pipeline = Pipeline(
            [
                transport.input(),
                DeepgramSTTService(api_key=os.environ["DEEPGRAM_API_KEY"]),
                aggregators.user(),
                llm,
                CartesiaTTSService(
                    api_key=os.environ["CARTESIA_API_KEY"],
                    voice_id="71a7ad14-091c-4e8e-a314-022ece01c121",
                ),
                transport.output(),
                aggregators.assistant(),
            ]
        )
        worker = PipelineWorker(pipeline)
        midcall.end_with(worker)

        @transport.event_handler("on_client_disconnected")
        async def hung_up(transport, client) -> None:
            await worker.cancel()

        runner = WorkerRunner(handle_sigint=runner_args.handle_sigint)
        await runner.add_workers(worker)
        await runner.run()


if __name__ == "__main__":
    if "--demo" in sys.argv:
        asyncio.run(demo())
    else:
        from pipecat.runner.run import main

        main()
