"""``midcall runtime-accounts FILE``: runtime credentials for a nats-server Midcall does not run.

``midcall up`` keeps its embedded server's runtime accounts itself. A server of
your own (compose, a cluster node) includes ``FILE`` in its ``accounts`` block
(``midcall nats-config --runtime-accounts FILE``); this command, run beside it
until stopped, keeps ``FILE`` to the credentials bucket and has the server
reload it. It signs in as the ``setup`` user (``MIDCALL_NATS_USER`` and
``MIDCALL_NATS_PASSWORD``) to follow the bucket, and as ``reload`` with
``MIDCALL_NATS_PASSWORD_RELOAD``.
"""

import asyncio
import os
import signal
import sys
from pathlib import Path

from shared.fabric.broker import sign_in
from shared.security.nats_auth import Role, connect_options, password_env
from shared.security.runtime_accounts import RuntimeAccounts, ensure_file
from shared.settings import Settings


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
    await accounts.start(settings.nats_url, sign_in(settings, Role.SETUP.value), reload)
    await stopping.wait()
    await accounts.stop()
    return 0
