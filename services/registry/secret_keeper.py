"""Setting and deleting account secrets: sealed here, stored in SQL, then mirrored.

A value is sealed as soon as it arrives; from then on only its ciphertext
exists outside the request that carried it (SQL, the ``midcall_secrets``
bucket, NATS), until an http-executor opens it to render a request.
"""

import asyncio

from nats.js import JetStreamContext

from services.registry.bucket_mirror import BucketMirror
from services.registry.secret_store import SecretInfo, SecretStore
from shared.contract.subjects import SECRETS_BUCKET
from shared.security.account_secrets import slot
from shared.security.secret_box import SecretBox


class SecretKeeper:
    def __init__(self, store: SecretStore, box: SecretBox, bucket: BucketMirror) -> None:
        self._store = store
        self._box = box
        self._bucket = bucket
        # SQL then the bucket, one change at a time: two writers of one secret must
        # not leave the bucket holding the value SQL replaced.
        self._writes = asyncio.Lock()

    @classmethod
    async def open(cls, js: JetStreamContext, store: SecretStore, box: SecretBox) -> "SecretKeeper":
        return cls(store, box, await BucketMirror.open(js, SECRETS_BUCKET))

    async def sync(self) -> None:
        """Make the bucket hold exactly SQL's ciphertexts (at start)."""
        sealed = await asyncio.to_thread(self._store.all_sealed)
        await self._bucket.sync({key: value.encode() for key, value in sealed.items()})

    async def put(self, account_id: str, name: str, value: str) -> SecretInfo:
        where = slot(account_id, name)
        sealed = self._box.seal(value, where)
        async with self._writes:
            info = await asyncio.to_thread(self._store.put, account_id, name, sealed)
            await self._bucket.put(where, sealed.encode())
        return info

    async def copy(self, name: str, source_account: str, target_account: str) -> bool:
        """Give ``target_account`` the secret ``name`` of ``source_account`` (sealed anew:
        a ciphertext opens only in its own slot); whether the source had it."""
        sealed = await asyncio.to_thread(self._store.sealed, source_account, name)
        if sealed is None:
            return False
        await self.put(target_account, name, self._box.open(sealed, slot(source_account, name)))
        return True

    async def delete(self, account_id: str, name: str) -> bool:
        """Whether the account had it."""
        async with self._writes:
            existed = await asyncio.to_thread(self._store.delete, account_id, name)
            # Also when SQL had none: a retry after a failed bucket write heals it.
            await self._bucket.delete(slot(account_id, name))
        return existed

    async def infos(self, account_id: str) -> list[SecretInfo]:
        return await asyncio.to_thread(self._store.infos, account_id)

    async def names(self, account_id: str) -> set[str]:
        return await asyncio.to_thread(self._store.names, account_id)
