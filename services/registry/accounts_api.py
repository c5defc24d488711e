"""Accounts and their API keys over REST: the admin makes them, an account sees its own."""

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, ConfigDict, Field

from services.registry.accounts import Account, AccountExists, AccountStore, KeyInfo
from services.registry.bucket_mirror import BucketMirror
from shared.contract.events import ID_PATTERN
from shared.process.http_api import ApiError
from shared.security.api_keys import AUTHENTICATED, Caller, Principal, new_key, require_admin

AccountId = Annotated[str, Path(pattern=ID_PATTERN)]
KeyId = Annotated[str, Path(pattern=r"^[0-9a-f]{1,32}$")]


class AccountBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    account_id: str = Field(pattern=ID_PATTERN)
    name: str | None = Field(default=None, max_length=256)


class NewKey(KeyInfo):
    # Shown this once: only its digest is kept.
    key: str


async def sync_keys(accounts: AccountStore, keys: BucketMirror) -> None:
    """Make the keys bucket hold exactly the live keys SQL has (at start)."""
    live = await asyncio.to_thread(accounts.live_keys)
    await keys.sync({key.key_id: key.model_dump_json().encode() for key in live})


def visible(accounts: AccountStore, account_id: str, caller: Principal) -> Account:
    """The account, if the caller may see it; another account's answers as unknown, so
    ids do not leak."""
    account = accounts.get(account_id) if caller.may_see(account_id) else None
    if account is None:
        raise unknown_account(account_id)
    return account


def unknown_account(account_id: str) -> ApiError:
    return ApiError(404, "unknown_account", f"there is no account '{account_id}'")


def build_router(accounts: AccountStore, keys: BucketMirror) -> APIRouter:
    router = APIRouter(prefix="/v1/accounts", dependencies=AUTHENTICATED)

    @router.post("", status_code=201)
    async def create_account(body: AccountBody, caller: Caller) -> Account:
        require_admin(caller)
        try:
            return await asyncio.to_thread(accounts.create, body.account_id, body.name)
        except AccountExists as exc:
            raise ApiError(
                409, "account_exists", f"the account '{body.account_id}' exists already"
            ) from exc

    @router.get("")
    async def list_accounts(caller: Caller) -> dict[str, Any]:
        require_admin(caller)
        return {"accounts": await asyncio.to_thread(accounts.all)}

    @router.get("/{account_id}")
    async def get_account(account_id: AccountId, caller: Caller) -> Account:
        return await asyncio.to_thread(visible, accounts, account_id, caller)

    @router.post("/{account_id}/keys", status_code=201)
    async def create_key(account_id: AccountId, caller: Caller) -> NewKey:
        require_admin(caller)
        await asyncio.to_thread(visible, accounts, account_id, caller)
        key, stored = new_key(account_id)
        info = await asyncio.to_thread(accounts.add_key, stored)
        await keys.put(stored.key_id, stored.model_dump_json().encode())
        return NewKey(**info.model_dump(), key=key)

    @router.get("/{account_id}/keys")
    async def list_keys(account_id: AccountId, caller: Caller) -> dict[str, Any]:
        await asyncio.to_thread(visible, accounts, account_id, caller)
        return {"keys": await asyncio.to_thread(accounts.keys, account_id)}

    @router.delete("/{account_id}/keys/{key_id}", status_code=204, response_class=Response)
    async def revoke_key(account_id: AccountId, key_id: KeyId, caller: Caller) -> Response:
        """Revoke a key (an account may revoke its own, even the one it calls with)."""
        await asyncio.to_thread(visible, accounts, account_id, caller)
        if not await asyncio.to_thread(accounts.revoke, account_id, key_id):
            raise ApiError(404, "unknown_key", f"account '{account_id}' has no key '{key_id}'")
        # Also when revoked before: a retry after a failed bucket write heals it.
        await keys.delete(key_id)
        return Response(status_code=204)

    return router
