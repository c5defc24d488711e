"""Midcall's tools as Pipecat function calls (pipecat-ai 1.14).

    midcall = MidcallFunctions(mc, "salon-bot", "conv-42", context={"From": caller})
    context = LLMContext(messages, tools=await midcall.tools_schema())
    midcall.register(llm)  # one handler for every tool of the agent
    midcall.end_with(worker)  # the pipeline's end ends the conversation in Midcall

When the LLM calls a tool, its filler is pushed as a ``TTSSpeakFrame`` as soon as
the call is pending; each progress its API reports is an intermediate result for
the LLM (async calls only, ``cancel_on_interruption=False``: Pipecat takes them
from no others), its message pushed as a ``TTSSpeakFrame`` where it asks to be
said; the tool's ``agent_message`` is spoken verbatim, otherwise the LLM runs on
the result; a failed call hands the LLM the message to say.
"""

from functools import partial
from typing import Any

from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    FunctionCallResultProperties,
    TTSSpeakFrame,
)
from pipecat.pipeline.worker import PipelineWorker
from pipecat.services.llm_service import FunctionCallParams, LLMService

from midcall.adapters.conversation import ConversationCalls, answered
from midcall.client import CallFailed, MidcallClient
from shared.contract.events import ToolCallProgress, ToolCallResult
from shared.contract.manifest import llm_parameters
from shared.contract.tools import Tool

# What Midcall is told when Pipecat cancels a handler: an interruption (where calls are
# cancelled on interruption), Pipecat's timeout, or the pipeline's teardown.
CANCELLED_BY_PIPECAT = "cancelled by the Pipecat pipeline"
# Pipecat's own timeout runs this much past the call's deadline, so that Midcall's
# ``timeout`` result, with its message to say, reaches the LLM first.
TIMEOUT_GRACE_S = 1.0


def function_schema(tool: Tool) -> FunctionSchema:
    """The tool as the LLM sees it: without the parameters bound from the call's context."""
    parameters = llm_parameters(tool)
    return FunctionSchema(
        name=tool.name,
        description=tool.description,
        properties=parameters.get("properties", {}),
        required=parameters.get("required", []),
    )


def for_the_llm(result: ToolCallResult) -> Any:
    """The tool's result, or its message for the agent when it has none: Pipecat neither
    runs the LLM on an empty result nor puts one in the context."""
    return result.result if result.result is not None else result.agent_message


def progress_for_the_llm(update: ToolCallProgress) -> dict[str, Any]:
    """What the LLM learns of a progress: its message, and how far along when the API says."""
    return update.model_dump(include={"message", "percent"}, exclude_none=True)


def spoken(result: ToolCallResult) -> str | None:
    """The words to say verbatim: the tool's message for the agent, unless it is silent."""
    return result.agent_message if result.speak else None


class MidcallFunctions(ConversationCalls):
    """One conversation's Midcall tools for a Pipecat LLM service.

    ``cancel_on_interruption``: Pipecat's; when False the calls are async (the LLM
    talks on while they run). ``timeout_secs``: each call's deadline (the tool's own
    when None). The rest as ``ConversationCalls``.
    """

    def __init__(
        self,
        mc: MidcallClient,
        agent_id: str,
        conversation_id: str,
        *,
        context: dict[str, Any] | None = None,
        cancel_on_interruption: bool = True,
        timeout_secs: float | None = None,
    ) -> None:
        super().__init__(mc, agent_id, conversation_id, context=context)
        self.cancel_on_interruption = cancel_on_interruption
        self.timeout_secs = timeout_secs

    async def tools_schema(self) -> ToolsSchema:
        """The agent's tools, as the registry has them now, for the ``LLMContext``."""
        tools = await self.mc.tools(self.agent_id)
        return ToolsSchema(standard_tools=[function_schema(tool) for tool in tools.tools])

    def register(self, llm: LLMService[Any]) -> None:
        """``handle`` runs every function call ``llm`` makes."""
        llm.register_function(
            None,
            self.handle,
            cancel_on_interruption=self.cancel_on_interruption,
            timeout_secs=None if self.timeout_secs is None else self.timeout_secs + TIMEOUT_GRACE_S,
        )

    def end_with(self, worker: PipelineWorker) -> None:
        """When the pipeline ends or is cancelled, the conversation ends in Midcall."""
        worker.add_event_handler("on_pipeline_finished", self._finished)

    async def handle(self, params: FunctionCallParams) -> None:
        """Run one function call of the LLM as a Midcall call."""
        name, arguments, call_id = params.function_name, dict(params.arguments), params.tool_call_id
        placed = self.placed(name, arguments, call_id, CANCELLED_BY_PIPECAT, self.timeout_secs)
        try:
            async with placed as call:
                say, report = partial(self._say, params), partial(self._progressed, params)
                result = await answered(call, say, report)
        except CallFailed as failed:
            await params.result_callback(
                {"error": failed.message}, properties=FunctionCallResultProperties(run_llm=True)
            )
            return
        await self._answer(params, result)

    async def _say(self, params: FunctionCallParams, words: str) -> None:
        await params.llm.push_frame(TTSSpeakFrame(words))

    async def _progressed(self, params: FunctionCallParams, update: ToolCallProgress) -> None:
        # Pipecat 1.14's intermediate result: ``is_final=False``, taken for async calls only
        # (it drops one of a sync call with a warning; that call's LLM awaits the result).
        # The LLM does not run on it: a progress not to be said now stays unsaid, and one
        # to be said was said verbatim; the LLM has it when the caller asks.
        if not self.cancel_on_interruption:
            await params.result_callback(
                progress_for_the_llm(update),
                properties=FunctionCallResultProperties(is_final=False, run_llm=False),
            )

    async def _answer(self, params: FunctionCallParams, result: ToolCallResult) -> None:
        words = spoken(result)
        if words is not None:
            await self._say(params, words)
        # The LLM phrases the result unless its words were just said or it is silent.
        run_llm = result.speak and words is None
        await params.result_callback(
            for_the_llm(result), properties=FunctionCallResultProperties(run_llm=run_llm)
        )

    async def _finished(self, worker: PipelineWorker, frame: Frame) -> None:
        # A StopFrame stops the pipeline with its connections kept: the call goes on.
        if isinstance(frame, EndFrame | CancelFrame):
            await self.aclose()
