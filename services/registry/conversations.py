"""Per-conversation variables over REST: read them, or render a prompt with them."""

from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field

from shared.api_keys import AUTHENTICATED, Caller, Principal
from shared.conversations import ConversationVariables, render_prompt
from shared.events import ID_PATTERN

ConversationId = Annotated[str, Path(pattern=ID_PATTERN)]


class RenderBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    template: str = Field(max_length=256 * 1024)


def build_router(variables: ConversationVariables) -> APIRouter:
    router = APIRouter(prefix="/v1/conversations/{conversation_id}", dependencies=AUTHENTICATED)

    async def visible(conversation_id: str, caller: Principal) -> dict[str, Any]:
        # Another account's conversation reads as one with no variables yet, like an
        # unknown one: an account learns nothing of others' conversations.
        found, account_id = await variables.get(conversation_id)
        return found if caller.may_see(account_id) else {}

    @router.get("/variables")
    async def get_variables(conversation_id: ConversationId, caller: Caller) -> dict[str, Any]:
        """Every variable the conversation's tool responses set so far (none is not an error)."""
        return {
            "conversation_id": conversation_id,
            "variables": await visible(conversation_id, caller),
        }

    @router.post("/render")
    async def render(
        conversation_id: ConversationId, body: RenderBody, caller: Caller
    ) -> dict[str, Any]:
        """The template with ``{{name}}`` filled in; unset names render empty and are listed."""
        text, unset = render_prompt(body.template, await visible(conversation_id, caller))
        return {"conversation_id": conversation_id, "text": text, "unset": unset}

    return router
