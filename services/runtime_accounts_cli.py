"""``midcall runtime-accounts FILE``: runtime credentials for a nats-server Midcall does not run.

``midcall up`` keeps its embedded server's runtime accounts itself. A server of
your own (compose, a cluster node) includes ``FILE`` in its ``accounts`` block
(``midcall nats-config --runtime-accounts FILE``); this command, run beside it
until stopped, keeps ``FILE`` to the credentials bucket and has the server
reload it. It signs in as the ``setup`` user (``MIDCALL_NATS_USER`` and
``MIDCALL_NATS_PASSWORD``) to follow the bucket, and as ``reload`` with
``MIDCALL_NATS_PASSWORD_RELOAD``. Started beside its server, before NATS
answers or ``midcall setup`` has made the bucket, it waits for both.
"""

import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from nats.js.errors import NotFoundError

from shared.fabric.broker import sign_in
from shared.fabric.outages import TRANSIENT
from shared.security.nats_auth import Role, connect_options, password_env
from shared.security.runtime_accounts import RuntimeAccounts, ensure_file
from shared.settings import Settings

log = logging.getLogger("midcall.runtime_accounts")

# How often a sidecar looks again for NATS and the credentials bucket while it waits.
WAIT_S = 1.0
# What waiting means: NATS not answering yet, or the bucket not made yet.
NOT_YET: tuple[type[Exception], ...] = (NotFoundError, *TRANSIENT)


async def run(settings: Settings, path: Path) -> int:
    password = os.environ.get(password_env(Role.RELOAD))
    if not settings.nats_url or not password:
        print(
            f"midcall runtime-accounts needs MIDCALL_NATS_URL and {password_env(Role.RELOAD)}",
            file=sys.stderr,
        )
        return 2
    # Before anything else: a stop asked for while starting (the signal may even have been
    # ignored by whoever started us) ends it once started.
    stopping = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stopping.set)
    ensure_file(path)
    accounts = RuntimeAccounts(path)
    reload = dict(connect_options(Role.RELOAD, password))
    watch = sign_in(settings, Role.SETUP.value)
    if await started(accounts, settings.nats_url, watch, reload, stopping):
        await stopping.wait()
    await accounts.stop()
    return 0


async def started(
    accounts: RuntimeAccounts,
    url: str,
    watch: dict[str, Any],
    reload: dict[str, Any],
    stopping: asyncio.Event,
) -> bool:
    """Follow the credentials bucket once NATS answers and ``midcall setup`` has made it;
    False if stopped first. A pod's sidecar starts with its nats-server, before the
    setup job: exiting would only have it restarted, with a growing back-off."""
    while not stopping.is_set():
        try:
            await accounts.start(url, watch, reload)
            return True
        except NOT_YET as exc:
            await accounts.stop()
            log.warning("waiting for NATS and the credentials bucket (midcall setup): %r", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), WAIT_S)
    return False
