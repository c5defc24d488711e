"""Runtime credentials per account: each account's runtimes in a NATS account of their own.

The shared ``runtime`` user hears every conversation and may call any agent:
right for a set-up with one customer. For several, each account is given
runtime credentials (``POST /v1/accounts/{id}/runtime-credentials``): a NATS
user in a NATS account made for that customer, ``RUNTIMES_<account>``, which
imports from Midcall's account only that customer's subjects, mapped to the
public ones (``shared.contract.subjects``):

- ``midcall.calls.<conv>`` published there arrives in Midcall's account as
  ``midcall.calls.<account>.<conv>`` (a service import: the JetStream PubAck
  comes back), so the dispatcher knows whose runtime placed the call and
  finds that account's agents only;
- likewise ``midcall.conv.<conv>.ended`` and ``.cancel``;
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
import contextlib
import json
import logging
import re
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Set
from datetime import datetime
from pathlib import Path
from typing import Any

import bcrypt
import nats
import nats.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from pydantic import BaseModel, ValidationError

from shared.contract import subjects
from shared.fabric.bucket_follower import BucketFollower
from shared.fabric.liveness import SILENCE_DETECTION
from shared.fabric.outages import TRANSIENT
from shared.security.data_dir import write_private
from shared.security.nats_auth import (
    SYSTEM_REQUESTS,
    NatsUser,
    Permissions,
    Share,
    render_import,
    render_list,
)
from shared.settings import servers

log = logging.getLogger("midcall.runtime_accounts")
RUNTIME_ACCOUNTS_FILE = "runtime-accounts.conf"
ACCOUNT_PREFIX = "RUNTIMES_"
USER_PREFIX = "runtime-"
# nats-server compares bcrypt digests itself; 11 is what its own tooling uses.
BCRYPT_COST = 11
# How long a reload may take to be confirmed; how long the other servers of a cluster
# have to answer the ping after the first; how soon a reload that failed is tried again.
RELOAD_TIMEOUT_S = 5.0
OTHER_SERVERS_S = 0.25
RETRY_S = 1.0


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
        Share("service", subjects.cancel("*", account_id), subjects.cancel("*")),
        Share("stream", subjects.pending("*", account_id), subjects.pending("*")),
        Share("stream", subjects.result("*", account_id), subjects.result("*")),
        Share("stream", subjects.progress("*", account_id), subjects.progress("*")),
        Share("service", subjects.stored("*", account_id), subjects.stored("*")),
    )


def permissions(credential_id: str) -> Permissions:
    """The public contract, in the account's own NATS account: calls, ends, cancels and
    asks for stored events out; its conversations and its own inbox in."""
    return Permissions(
        publish=tuple(share.local for share in shares("-") if share.kind == "service"),
        subscribe=(subjects.ALL_CONV, f"{inbox_prefix(credential_id)}.>"),
    )


def render(credentials: Iterable[RuntimeCredential], without_users: Set[str] = frozenset()) -> str:
    """The accounts of ``RUNTIME_ACCOUNTS_FILE``: one per account with credentials (the
    accounts in ``without_users`` with none signed in yet)."""
    members: dict[str, list[RuntimeCredential]] = defaultdict(list)
    for credential in credentials:
        members[credential.account_id].append(credential)
    lines: list[str] = []
    for account_id in sorted(members):
        users = [
            NatsUser(c.user, json.dumps(c.password_digest), permissions(c.credential_id))
            for c in sorted(members[account_id], key=lambda c: c.credential_id)
            if account_id not in without_users
        ]
        body = render_list("users", users)
        body += render_list("imports", [render_import(share) for share in shares(account_id)])
        name = json.dumps(account_name(account_id))
        lines += [f"{name} {{", *(f"  {line}" for line in body), "}", ""]
    return "\n".join(lines)


def accounts_in(text: str) -> set[str]:
    """The accounts a file ``render`` wrote holds."""
    return set(re.findall(rf'^"{ACCOUNT_PREFIX}([^"]+)" {{$', text, re.MULTILINE))


class Reloader:
    """Has nats-server reload its configuration, over its system account's requests (signed
    in as ``Role.RELOAD``), each answered once the reload is done: every server that
    answers a ping, so each node of a cluster reads its own copy of the file."""

    def __init__(self, client: Client) -> None:
        self._client = client

    async def reload(self) -> None:
        for server_id in await self._servers():
            subject = f"{SYSTEM_REQUESTS}.{server_id}.RELOAD"
            answer = await self._client.request(subject, b"", timeout=RELOAD_TIMEOUT_S)
            error = json.loads(answer.data).get("error")
            if error:
                raise ReloadFailed(f"nats-server {server_id} did not reload: {error}")

    async def _servers(self) -> list[str]:
        inbox = self._client.new_inbox()
        answers = await self._client.subscribe(inbox)
        await self._client.publish(f"{SYSTEM_REQUESTS}.PING.IDZ", b"", reply=inbox)
        found: list[str] = []
        timeout = RELOAD_TIMEOUT_S
        try:
            while True:  # the first within the timeout, the rest of a cluster just after
                found.append(json.loads((await answers.next_msg(timeout=timeout)).data)["id"])
                timeout = OTHER_SERVERS_S
        except nats.errors.TimeoutError:
            pass
        finally:
            await answers.unsubscribe()
        if not found:
            raise ReloadFailed("no nats-server answered the ping")
        return found


class ReloadFailed(Exception):
    """nats-server did not confirm a reload: the file stays to be reloaded again."""


# A reload not confirmed (NATS away a moment, the server busy) is tried again.
RETRIED: tuple[type[Exception], ...] = (ReloadFailed, *TRANSIENT)


class AccountsFile:
    """Keeps ``RUNTIME_ACCOUNTS_FILE`` to what the credentials bucket holds, and has
    nats-server reload it whenever it changed: a new credential signs in within
    milliseconds, a revoked one is disconnected as fast."""

    def __init__(self, path: Path, reload: Callable[[], Awaitable[None]]) -> None:
        self._path = path
        self._reload = reload
        self._credentials: dict[str, RuntimeCredential] = {}
        # What nats-server confirmed it loaded: the file as it started with it.
        self._loaded = path.read_text() if path.exists() else None
        self._changed = asyncio.Event()
        self._stopping = False
        self._keeper: asyncio.Task[None] | None = None
        self._follower = BucketFollower(self._apply)

    async def follow(self, js: JetStreamContext) -> None:
        """Load the bucket and bring the server to it (not before the whole bucket is in:
        a partial file would disconnect the runtimes of every credential not yet read),
        then keep it there."""
        await self._follower.follow(js, subjects.RUNTIME_CREDENTIALS_BUCKET)
        await self._bring_up_to_date()
        self._keeper = asyncio.create_task(self._keep_up_to_date())

    def rewatch(self) -> None:
        self._follower.rewatch()

    async def stop(self) -> None:
        if self._keeper is not None:
            # Cancelling alone may not end it: a cancel can come out of nats-py as one of
            # its errors (next_msg: a TimeoutError when it meets wait_for's timeout, a
            # ConnectionClosedError once closed), which a reload retries as transient.
            self._stopping = True
            self._changed.set()
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
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
        self._changed.set()

    async def _keep_up_to_date(self) -> None:
        # One change at a time; a burst of them is one write and one reload.
        while True:
            await self._changed.wait()
            if self._stopping:
                return
            self._changed.clear()
            try:
                await self._bring_up_to_date()
            except RETRIED as exc:
                log.warning("runtime accounts not reloaded yet (%s); trying again", exc)
                await asyncio.sleep(RETRY_S)
                self._changed.set()

    async def _bring_up_to_date(self) -> None:
        text = render(self._credentials.values())
        if text == self._loaded:
            return
        accounts = {c.account_id for c in self._credentials.values()}
        if fresh := accounts - accounts_in(self._loaded or ""):
            # nats-server (2.15) subscribes the service imports of an account that a
            # reload creates only at the next reload (configureAccounts skips them
            # while reloading). So a new account comes first, its users with the next
            # reload: none signs in before it can place calls.
            await self._load(render(self._credentials.values(), without_users=fresh))
        await self._load(text)
        log.info("runtime accounts reloaded: %d credentials", len(self._credentials))

    async def _load(self, text: str) -> None:
        write_private(self._path, text)
        await self._reload()
        self._loaded = text


def ensure_file(path: Path) -> None:
    """An empty accounts file where none was written yet: nats-server's include needs one."""
    if not path.exists():
        write_private(path, render(()))


class RuntimeAccounts:
    """Keeps one nats-server's runtime accounts current: follows the credentials bucket
    signed in as a role that may watch it (``setup``), and has the server reload as
    ``Role.RELOAD``. ``midcall up`` runs one for its embedded server; ``midcall
    runtime-accounts`` runs one beside a server of your own that includes the file."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._file: AccountsFile | None = None
        self._clients: list[Client] = []

    async def start(self, url: str, watch: dict[str, Any], reload: dict[str, Any]) -> None:
        reloading = await nats.connect(servers(url), **SILENCE_DETECTION, **reload)
        self._clients.append(reloading)
        self._file = AccountsFile(self._path, Reloader(reloading).reload)
        # After a reconnect the watch's consumer may be gone with the old server.
        watching = await nats.connect(
            servers(url), reconnected_cb=self._reconnected, **SILENCE_DETECTION, **watch
        )
        self._clients.append(watching)
        await self._file.follow(watching.jetstream())

    async def _reconnected(self) -> None:
        if self._file is not None:
            self._file.rewatch()

    async def stop(self) -> None:
        """Stops following; a start may follow (a sidecar tries until the bucket is made)."""
        if self._file is not None:
            await self._file.stop()
        for client in self._clients:
            await client.close()
        self._file = None
        self._clients = []
