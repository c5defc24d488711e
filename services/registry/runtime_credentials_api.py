"""Runtime credentials over REST: an account's runtimes, each in the account's own NATS
account (``shared.security.runtime_accounts``); made by the admin or the account, shown once."""

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Path, Response

from services.registry.accounts import AccountStore
from services.registry.accounts_api import AccountId, visible
from services.registry.api import over_quota
from services.registry.bucket_mirror import BucketMirror
from services.registry.runtime_credentials import (
    CredentialInfo,
    RuntimeCredentialStore,
    info,
)
from services.registry.store import QuotaExceeded
from shared.process.http_api import ApiError
from shared.security.api_keys import AUTHENTICATED, Caller
from shared.security.nats_auth import generate_password
from shared.security.runtime_accounts import RuntimeCredential, digest

CredentialId = Annotated[str, Path(pattern=r"^[0-9a-f]{1,32}$")]


class NewCredential(CredentialInfo):
    # Shown this once: only its bcrypt digest is kept.
    password: str


async def sync_credentials(store: RuntimeCredentialStore, bucket: BucketMirror) -> None:
    """Make the bucket hold exactly the live credentials SQL has (at start)."""
    live = await asyncio.to_thread(store.live)
    await bucket.sync({c.credential_id: _stored(c) for c in live})


def _stored(credential: RuntimeCredential) -> bytes:
    return credential.model_dump_json().encode()


def build_router(
    accounts: AccountStore, store: RuntimeCredentialStore, bucket: BucketMirror
) -> APIRouter:
    router = APIRouter(
        prefix="/v1/accounts/{account_id}/runtime-credentials", dependencies=AUTHENTICATED
    )

    @router.post("", status_code=201)
    async def create_credential(account_id: AccountId, caller: Caller) -> NewCredential:
        """A NATS user for the account's runtimes: they place calls for its agents only,
        and hear its conversations only. The password is in this answer alone."""
        await asyncio.to_thread(visible, accounts, account_id, caller)
        password = generate_password()
        # bcrypt is slow on purpose: off the event loop.
        digested = await asyncio.to_thread(digest, password)
        try:
            credential = await asyncio.to_thread(store.add, account_id, digested)
        except QuotaExceeded as exc:
            raise over_quota(exc) from exc
        await bucket.put(credential.credential_id, _stored(credential))
        return NewCredential(**info(credential).model_dump(), password=password)

    @router.get("")
    async def list_credentials(account_id: AccountId, caller: Caller) -> dict[str, Any]:
        await asyncio.to_thread(visible, accounts, account_id, caller)
        return {"runtime_credentials": await asyncio.to_thread(store.of_account, account_id)}

    @router.delete("/{credential_id}", status_code=204, response_class=Response)
    async def revoke_credential(
        account_id: AccountId, credential_id: CredentialId, caller: Caller
    ) -> Response:
        """Revoke a credential: its runtimes are disconnected and refused within seconds."""
        await asyncio.to_thread(visible, accounts, account_id, caller)
        if not await asyncio.to_thread(store.revoke, account_id, credential_id):
            raise ApiError(
                404,
                "unknown_runtime_credential",
                f"account '{account_id}' has no runtime credential '{credential_id}'",
            )
        # Also when revoked before: a retry after a failed bucket write heals it.
        await bucket.delete(credential_id)
        return Response(status_code=204)

    return router
