"""Account secrets over REST: write-only values, listed by name and time.

``PUT`` takes a value and never gives it back: no answer, list or export
contains one, and nothing logs one. The admin or the account's own key may
manage an account's secrets; another account's answer 404, as everywhere.
"""

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from services.registry.accounts import AccountStore
from services.registry.accounts_api import AccountId, visible
from services.registry.secret_keeper import SecretKeeper
from services.registry.secret_store import SecretInfo
from shared.contract.catalog import DEFAULT_ACCOUNT
from shared.process.http_api import ApiError, well_formed_text
from shared.security.account_secrets import NAME_PATTERN
from shared.security.api_keys import AUTHENTICATED, Caller, Principal

# Keys, tokens and certificates' private keys fit; a document does not belong here.
MAX_VALUE_CHARS = 8192

SecretName = Annotated[str, Path(pattern=NAME_PATTERN)]


class SecretBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # SecretStr: never shown by a repr, a log line or a validation error.
    value: SecretStr = Field(min_length=1, max_length=MAX_VALUE_CHARS)

    @field_validator("value")
    @classmethod
    def _well_formed(cls, value: SecretStr) -> SecretStr:
        well_formed_text(value.get_secret_value())
        return value


def build_router(accounts: AccountStore, secrets: SecretKeeper) -> APIRouter:
    router = APIRouter(prefix="/v1/accounts/{account_id}/secrets", dependencies=AUTHENTICATED)

    def owner(account_id: str, caller: Principal) -> None:
        # Agents used before any account was made belong to ``default``, which may have
        # no row: its tools' signing secrets are kept under it, and the admin manages them.
        if caller.is_admin and account_id == DEFAULT_ACCOUNT:
            return
        visible(accounts, account_id, caller)

    @router.get("")
    async def list_secrets(account_id: AccountId, caller: Caller) -> dict[str, Any]:
        await asyncio.to_thread(owner, account_id, caller)
        return {"account_id": account_id, "secrets": await secrets.infos(account_id)}

    @router.put("/{name}")
    async def put_secret(
        account_id: AccountId, name: SecretName, body: SecretBody, caller: Caller
    ) -> SecretInfo:
        await asyncio.to_thread(owner, account_id, caller)
        return await secrets.put(account_id, name, body.value.get_secret_value())

    @router.delete("/{name}", status_code=204, response_class=Response)
    async def delete_secret(account_id: AccountId, name: SecretName, caller: Caller) -> Response:
        await asyncio.to_thread(owner, account_id, caller)
        if not await secrets.delete(account_id, name):
            raise ApiError(404, "unknown_secret", f"account '{account_id}' has no secret '{name}'")
        return Response(status_code=204)

    return router
