"""Runtime credentials per account: each account's runtimes in a NATS account of their own.

The shared ``runtime`` user hears every conversation and may call any agent:
right for a set-up with one customer. For several, each account is given
runtime credentials (``POST /v1/accounts/{id}/runtime-credentials``): a NATS
user in a NATS account made for that customer, ``RUNTIMES_<account>``, which
imports from Midcall's account only that customer's subjects, mapped to the
public ones (``shared.subjects``):

- ``midcall.calls.<conv>`` published there arrives in Midcall's account as
  ``midcall.calls.<account>.<conv>`` (a service import: the JetStream PubAck
  comes back), so the dispatcher knows whose runtime placed the call and
  finds that account's agents only;
- likewise ``midcall.conv.<conv>.ended``;
- ``midcall.conv.<account>.<conv>.pending`` and ``.result`` come back as
  ``midcall.conv.<conv>.pending`` and ``.result`` (stream imports), to this
  account's runtimes only.

nats-server enforces all of it: no other account's subject is imported, so
none can be published or heard, and a reply-subject trick (a server-made
answer sent to a subject the runtime names) lands in the runtime's own
account, heard by its own runtimes alone.

Credentials are kept as bcrypt digests (nats-server checks ``$2b$``
passwords itself), in the registry's SQL and mirrored to a KV bucket; the
process that runs nats-server writes the accounts into an included file
(``RUNTIME_ACCOUNTS_FILE``) whenever the bucket changes and has the server
reload it. A reload closes the connections of a user no longer listed, so a
revoked credential stops working for connected runtimes too.
"""

import asyncio
import json
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path

import bcrypt
from nats.js import JetStreamContext
from pydantic import BaseModel, ValidationError

from shared import subjects
from shared.bucket_follower import BucketFollower
from shared.data_dir import write_private
from shared.nats_auth import (
    NatsUser,
    Permissions,
    Share,
    render_import,
    render_list,
)

log = logging.getLogger("midcall.runtime_accounts")
RUNTIME_ACCOUNTS_FILE = "runtime-accounts.conf"
ACCOUNT_PREFIX = "RUNTIMES_"
USER_PREFIX = "runtime-"
# nats-server compares bcrypt digests itself; 11 is what its own tooling uses.
BCRYPT_COST = 11
# How long after a reload that created an account the second one is signalled.
SECOND_RELOAD_S = 0.25


class RuntimeCredential(BaseModel):
    """One runtime credential as kept (never its password): a NATS user of an account."""

    credential_id: str
    account_id: str
    password_digest: str
    created_at: datetime

    @property
    def user(self) -> str:
        return user_name(self.credential_id)

    @property
    def inbox_prefix(self) -> str:
        return inbox_prefix(self.credential_id)


def user_name(credential_id: str) -> str:
    return f"{USER_PREFIX}{credential_id}"


def inbox_prefix(credential_id: str) -> str:
    """Each credential's replies under its own prefix: two runtimes of one account
    cannot read each other's PubAcks."""
    return f"_INBOX_{user_name(credential_id)}"


def digest(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(BCRYPT_COST)).decode()


def account_name(account_id: str) -> str:
    return f"{ACCOUNT_PREFIX}{account_id}"


def shares(account_id: str) -> tuple[Share, ...]:
    """What an account's runtimes import from Midcall's account: that account's subjects
    only, each mapped to the public subject a runtime uses."""
    return (
        Share("service", subjects.calls("*", account_id), subjects.calls("*")),
        Share("service", subjects.ended("*", account_id), subjects.ended("*")),
        Share("stream", subjects.pending("*", account_id), subjects.pending("*")),
        Share("stream", subjects.result("*", account_id), subjects.result("*")),
    )


def permissions(credential_id: str) -> Permissions:
    """The public contract, in the account's own NATS account: calls and ends out;
    its conversations and its own inbox in."""
    return Permissions(
        publish=(subjects.calls("*"), subjects.ended("*")),
        subscribe=(subjects.ALL_CONV, f"{inbox_prefix(credential_id)}.>"),
    )


def render(credentials: Iterable[RuntimeCredential]) -> str:
    """The accounts of ``RUNTIME_ACCOUNTS_FILE``: one per account with credentials."""
    members: dict[str, list[RuntimeCredential]] = defaultdict(list)
    for credential in credentials:
        members[credential.account_id].append(credential)
    lines: list[str] = []
    for account_id in sorted(members):
        users = [
            NatsUser(c.user, json.dumps(c.password_digest), permissions(c.credential_id))
            for c in sorted(members[account_id], key=lambda c: c.credential_id)
        ]
        body = render_list("users", users)
        body += render_list("imports", [render_import(share) for share in shares(account_id)])
        name = json.dumps(account_name(account_id))
        lines += [f"{name} {{", *(f"  {line}" for line in body), "}", ""]
    return "\n".join(lines)


def write(path: Path, credentials: Iterable[RuntimeCredential]) -> bool:
    """Write the accounts file; whether it changed (only then need the server reload)."""
    text = render(credentials)
    if path.exists() and path.read_text() == text:
        return False
    write_private(path, text)
    return True


class AccountsFile:
    """Keeps ``RUNTIME_ACCOUNTS_FILE`` to what the credentials bucket holds, and has
    nats-server reload it whenever it changed: a new credential signs in within
    milliseconds, a revoked one is disconnected as fast."""

    def __init__(self, path: Path, reload: Callable[[], None]) -> None:
        self._path = path
        self._reload = reload
        self._credentials: dict[str, RuntimeCredential] = {}
        self._accounts: set[str] = set()
        # Not written before the whole bucket is in: a partial file would disconnect
        # the runtimes of every credential not yet read.
        self._loaded = False
        self._follower = BucketFollower(self._apply)

    async def follow(self, js: JetStreamContext) -> None:
        await self._follower.follow(js, subjects.RUNTIME_CREDENTIALS_BUCKET)
        self._loaded = True
        self._write()

    def rewatch(self) -> None:
        self._follower.rewatch()

    async def stop(self) -> None:
        await self._follower.stop()

    def _apply(self, key: str, value: bytes | None) -> None:
        if value is None:
            self._credentials.pop(key, None)
        else:
            try:
                self._credentials[key] = RuntimeCredential.model_validate_json(value)
            except ValidationError as exc:
                log.error("ignoring runtime credential %s: %s", key, exc)
                return
        if self._loaded:
            self._write()

    def _write(self) -> None:
        if not write(self._path, self._credentials.values()):
            return
        log.info("runtime accounts changed: %d credentials", len(self._credentials))
        self._reload()
        accounts = {c.account_id for c in self._credentials.values()}
        if accounts - self._accounts:
            # nats-server (2.15) subscribes the service imports of an account that a
            # reload creates only at the next reload (configureAccounts skips them
            # while reloading): a new account's runtimes could not place calls until
            # then. A second signal, once the first was taken (one more pending is
            # queued, any beyond are dropped), completes it.
            asyncio.get_running_loop().call_later(SECOND_RELOAD_S, self._reload)
        self._accounts = accounts


def ensure_file(path: Path) -> None:
    """An empty accounts file where none was written yet: nats-server's include needs one."""
    if not path.exists():
        write_private(path, render(()))
