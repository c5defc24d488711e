"""The secrets one work item may use, and their values: the only place any is opened.

A tool may use its own account's secrets (``tool.owner_account``, stamped by
the registry from its agent, never the call's ``account_id``, which the
runtime chooses); a platform tool (registered with the admin key) also the
platform's, ``MIDCALL_SECRET_<NAME>``, which win over an account's of the
same name. A name the tool may not use is simply absent: rendering then
fails the call as "not set up" (``render._require_secrets``).
"""

import asyncio
import logging
import time
from collections.abc import Callable, Mapping

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from shared.contract import subjects
from shared.contract.errors import CallRejected, ErrorCode
from shared.contract.events import ExecuteRequest
from shared.security.account_secrets import slot
from shared.security.secret_box import CannotOpen, SecretBox, settings_master_key
from shared.settings import Settings

log = logging.getLogger("midcall.secrets")
# How long an opened secret is used without looking again: a change or deletion
# over REST takes effect everywhere within this.
CACHE_S = 2.0
# More distinct secrets than this in the cache is not a working set: start over.
MAX_CACHED = 10_000


class AccountSecrets:
    """Account secrets from the ``midcall_secrets`` bucket, opened with the master key."""

    def __init__(
        self, bucket: KeyValue, box: SecretBox, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._bucket = bucket
        self._box = box
        self._clock = clock
        self._opened: dict[str, tuple[str, float]] = {}

    async def value(self, account_id: str, name: str) -> str | None:
        where = slot(account_id, name)
        cached = self._opened.get(where)
        if cached is not None and self._clock() - cached[1] < CACHE_S:
            return cached[0]
        self._opened.pop(where, None)
        try:
            entry = await self._bucket.get(where)
        except KeyNotFoundError:  # never set, or deleted
            return None
        if entry.value is None:
            return None
        try:
            value = self._box.open(entry.value.decode(), where)
        except CannotOpen as exc:
            # Names only: the operator must learn that the keys differ, never a value.
            log.error(
                "account secret %s does not open (%s): is this executor's master key "
                "(MIDCALL_MASTER_KEY) the registry's?",
                where,
                exc,
            )
            return None
        if len(self._opened) >= MAX_CACHED:
            self._opened.clear()
        self._opened[where] = (value, self._clock())
        return value


class SecretScope:
    def __init__(self, platform: Mapping[str, str], accounts: AccountSecrets | None = None) -> None:
        self._platform = dict(platform)
        self._accounts = accounts

    async def for_work(self, work: ExecuteRequest) -> dict[str, str]:
        """The values of the secrets the work item's tool refers to and may use."""
        tool = work.tool
        wanted = tool.secret_names()
        found = (
            {n: self._platform[n] for n in wanted if n in self._platform} if tool.platform else {}
        )
        owner = tool.owner_account
        if owner is None or self._accounts is None:
            return found
        names = sorted(wanted - found.keys())
        values = await asyncio.gather(*(self._accounts.value(owner, name) for name in names))
        found.update({n: v for n, v in zip(names, values, strict=True) if v is not None})
        return found


def require_all(work: ExecuteRequest, secrets: dict[str, str]) -> None:
    """Fail a call whose tool needs a secret that is not set up, before anything is sent or run."""
    missing = sorted(work.tool.secret_names() - secrets.keys())
    if missing:
        raise CallRejected(
            ErrorCode.INTERNAL,
            f"The {work.tool.name} tool is not set up completely, so it cannot be "
            "used right now. Apologize and offer another way to help.",
            {"missing_secrets": missing},
        )


async def open_scope(
    js: JetStreamContext, settings: Settings, platform: Mapping[str, str]
) -> SecretScope:
    """An executor's scope: the platform's secrets, and the accounts' from their bucket."""
    box = SecretBox(await asyncio.to_thread(settings_master_key, settings))
    return SecretScope(platform, AccountSecrets(await js.key_value(subjects.SECRETS_BUCKET), box))
