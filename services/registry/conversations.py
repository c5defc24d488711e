"""Per-conversation variables over REST: read them, or render a prompt with them."""

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from shared.contract.catalog import DEFAULT_ACCOUNT
from shared.contract.events import ID_PATTERN
from shared.fabric.conversations import ConversationVariables, render_prompt
from shared.security.api_keys import AUTHENTICATED, Caller, Principal

ConversationId = Annotated[str, Path(pattern=ID_PATTERN)]
# Whose conversation: an account key's own by default; the admin's default is the
# ``default`` account's (agents nobody placed in an account belong to it).
AccountQuery = Annotated[str | None, Query(pattern=ID_PATTERN)]


class RenderBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    template: str = Field(max_length=256 * 1024)


def build_router(variables: ConversationVariables) -> APIRouter:
    router = APIRouter(prefix="/v1/conversations/{conversation_id}", dependencies=AUTHENTICATED)

    async def visible(conversation_id: str, caller: Principal, asked: str | None) -> dict[str, Any]:
        # A conversation is one account's: an account key reads its own, whatever it
        # asks for (another account's id reads as a conversation with no variables).
        if asked is not None and not caller.may_see(asked):
            return {}
        return await variables.get(asked or caller.account_id or DEFAULT_ACCOUNT, conversation_id)

    @router.get("/variables")
    async def get_variables(
        conversation_id: ConversationId, caller: Caller, account_id: AccountQuery = None
    ) -> dict[str, Any]:
        """Every variable the conversation's tool responses set so far (none is not an error)."""
        return {
            "conversation_id": conversation_id,
            "variables": await visible(conversation_id, caller, account_id),
        }

    @router.post("/render")
    async def render(
        conversation_id: ConversationId,
        body: RenderBody,
        caller: Caller,
        account_id: AccountQuery = None,
    ) -> dict[str, Any]:
        """The template with ``{{name}}`` filled in; unset names render empty and are listed."""
        found = await visible(conversation_id, caller, account_id)
        text, unset = render_prompt(body.template, found)
        return {"conversation_id": conversation_id, "text": text, "unset": unset}

    return router
