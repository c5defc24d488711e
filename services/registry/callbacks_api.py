"""A long-running tool's API reports back: progress while it works, then its completion.

An API that answered a call's request with ``202 Accepted`` posts here with
the ``Midcall-Callback-Token`` that request carried, and nothing else: the
token names the call and cannot be made for another
(shared.security.callback_tokens). Progress goes to the conversation's
runtimes at once; the completion is stored once in the completions bucket,
where the call's executor is waiting, and the call is answered from it by
the same rules as a direct answer.
"""

import time
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Request
from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict, Field

from shared.contract.events import HttpResponse, ToolCallProgress
from shared.fabric.call_marks import CallMarks, Mark
from shared.fabric.messaging import Publisher
from shared.process.http_api import ApiError, Utf8Text
from shared.security.callback_tokens import TOKEN_HEADER, CallbackGrant, TokenRefused, verify

CallId = Annotated[str, Path(min_length=1, max_length=256)]
Token = Annotated[str | None, Header(alias=TOKEN_HEADER, max_length=4096)]


class ProgressBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: Utf8Text = Field(min_length=1, max_length=1000)
    speak: bool = False
    percent: float | None = Field(default=None, ge=0, le=100)


class Callbacks:
    def __init__(
        self, key: bytes, completions: KeyValue, marks: CallMarks, publisher: Publisher
    ) -> None:
        self.key = key
        self.completions = completions
        self.marks = marks
        self.publisher = publisher

    async def grant(self, token: str | None, call_id: str) -> CallbackGrant:
        """The token's grant for this call, still unanswered; else the 4xx that says why."""
        try:
            grant = verify(token, call_id, self.key, time.time())
        except TokenRefused as refused:
            raise ApiError(refused.status, "invalid_callback_token", refused.message) from None
        conversation = grant.conversation.key
        if await self.marks.has(conversation, call_id, Mark.ANSWERED, grant.attempt):
            raise ApiError(409, "call_answered", "The call was already answered.")
        return grant

    async def progress(self, grant: CallbackGrant, body: ProgressBody) -> None:
        event = ToolCallProgress(
            call_id=grant.call_id,
            conversation_id=grant.conversation_id,
            message=body.message,
            speak=body.speak,
            percent=body.percent,
        )
        conversation = grant.conversation
        # Each report is its own event: the same words twice are two reports.
        dedupe = f"{conversation.key}/{grant.call_id}/progress/{uuid.uuid4().hex}"
        await self.publisher.event(
            event, conversation.progress_subject, conversation.stream, dedupe
        )

    async def complete(self, grant: CallbackGrant, response: HttpResponse) -> None:
        try:
            await self.completions.create(grant.completion_key, response.model_dump_json().encode())
        except KeyWrongLastSequenceError:
            raise ApiError(
                409, "callback_token_used", "The call's completion was already received."
            ) from None


def build_router(callbacks: Callbacks, max_body_bytes: int) -> APIRouter:
    # No account key: the token is the only credential (and is checked before anything).
    router = APIRouter(prefix="/v1/calls/{call_id}", tags=["callbacks"])

    @router.post("/progress", status_code=202)
    async def report_progress(
        call_id: CallId, body: ProgressBody, token: Token = None
    ) -> dict[str, Any]:
        """A running call's progress, sent to its conversation's runtimes (``speak``: say
        the message to the caller now)."""
        grant = await callbacks.grant(token, call_id)
        await callbacks.progress(grant, body)
        return {"call_id": call_id, "accepted": True}

    @router.post("/complete")
    async def complete(call_id: CallId, request: Request, token: Token = None) -> dict[str, Any]:
        """The call's answer, as the API would have sent it instead of its 202: the body
        (with its Content-Type) is mapped by the tool's response rules, as a 200 would be.
        Accepted once per call."""
        grant = await callbacks.grant(token, call_id)
        body = await _limited_body(request, max_body_bytes)
        response = HttpResponse(
            status=200,
            content_type=request.headers.get("content-type"),
            body=body.decode("utf-8", errors="replace"),
        )
        await callbacks.complete(grant, response)
        return {"call_id": call_id, "accepted": True}

    return router


async def _limited_body(request: Request, limit: int) -> bytes:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(
                413,
                "too_large",
                f"The completion is larger than {limit} bytes, the most a response may be.",
            )
    return bytes(body)
