"""``midcall up``: an embedded nats-server (unless one is given) and one process per service.

Each service announces itself on ``midcall.ready.<name>`` once it serves, so
``up`` knows when the fabric is ready without polling. On SIGINT/SIGTERM the
services are asked to stop (each drains its NATS connection), then the
embedded server; a child that dies takes the whole fabric down, loudly, for
whatever supervises ``up`` to restart.
"""

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client
from nats.aio.subscription import Subscription

from services.catalog import SERVICES
from shared.contract import subjects
from shared.fabric import jetstream
from shared.fabric.broker import sign_in
from shared.fabric.nats_cluster import Cluster, start_cluster
from shared.fabric.nats_server import NatsServer, stable_port
from shared.process.processes import die_with_parent
from shared.security import runtime_accounts
from shared.security.api_keys import ADMIN_KEY_FILE, admin_key, ensure_admin_key
from shared.security.data_dir import private_dir
from shared.security.nats_auth import (
    CREDENTIALS_FILE,
    Role,
    connect_options,
    inbox_prefix,
    load_or_create_credentials,
    render_authorization,
)
from shared.security.runtime_accounts import RuntimeAccounts
from shared.settings import Settings, servers

log = logging.getLogger("midcall.up")
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 40.0
# Services that share their work through durable pull consumers, so more
# processes of them split the load; registry and billing serve REST on one port.
SCALABLE = frozenset({"dispatcher", "http-executor", "code-executor", "result-injector"})


def instances(replicas: int) -> dict[str, str]:
    """Process key -> service: ``dispatcher``, ``dispatcher-2``, ... for the scalable ones."""
    if replicas < 1:
        raise ValueError(f"replicas must be at least 1, not {replicas}")
    keys: dict[str, str] = {}
    for name in SERVICES:
        for index in range(1, (replicas if name in SCALABLE else 1) + 1):
            keys[name if index == 1 else f"{name}-{index}"] = name
    return keys


class Fabric:
    """nats-server (embedded or given) plus one process per service.

    ``replicas`` processes run each of the scalable services (the benchmark's
    ``--replicas``); ``children`` is keyed by process, e.g. ``dispatcher-2``.
    """

    def __init__(
        self,
        settings: Settings,
        extra_env: Mapping[str, str] | None = None,
        replicas: int = 1,
        nats_nodes: int = 1,
    ) -> None:
        """``nats_nodes`` above 1: the embedded NATS is a JetStream cluster of that many
        nodes on loopback (the cluster fault test's), with the same users and accounts."""
        self.settings = settings
        self.extra_env = dict(extra_env or {})
        self.instances = instances(replicas)
        self.nats_nodes = nats_nodes
        self.nats: NatsServer | None = None
        self.cluster: Cluster | None = None
        self.nats_url = settings.nats_url or ""
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        # An embedded server runs with a user per role (shared.security.nats_auth).
        self.credentials: dict[Role, str] = {}
        # Set by ``start`` when it created the data directory's admin key, to show once.
        self.new_admin_key: str | None = None
        # The embedded server's runtime accounts, kept to the credentials bucket.
        self._accounts: RuntimeAccounts | None = None

    @property
    def admin_key(self) -> str:
        """The REST admin key the services use (configured, or kept in the data directory)."""
        return admin_key(self.settings)

    def runtime_options(self) -> dict[str, Any]:
        """How a voice runtime connects to the embedded server (nats.connect options)."""
        if not self.credentials:
            return {}
        return dict(connect_options(Role.RUNTIME, self.credentials[Role.RUNTIME]))

    async def start(self) -> None:
        # Before anything is kept there; a data directory an older version left open
        # is tightened, with all it holds.
        private_dir(self.settings.data_dir)
        self.new_admin_key = ensure_admin_key(self.settings)
        if not self.nats_url:
            data_dir = self.settings.data_dir
            self.credentials = load_or_create_credentials(data_dir)
            if self.nats_nodes > 1:
                self.cluster = await self._nats_cluster()
                self.nats_url = self.cluster.url
            else:
                self.nats = self._nats_server(stable_port(data_dir))
                self.nats_url = self.nats.start()
            log.info("embedded NATS at %s (data in %s)", self.nats_url, data_dir)
        client = await self._connect()
        try:
            await jetstream.ensure(client.jetstream(), self.settings.stream_replicas, move=True)
            if self.credentials:
                await self._follow_runtime_accounts()
            ready = await client.subscribe(subjects.ready("*"), max_msgs=len(self.instances))
            for key, name in self.instances.items():
                self.children[key] = self._spawn(name)
            # Replicas announce under their service's name: count them, not just names.
            await self._await_ready(ready, Counter(self.instances.values()))
        finally:
            await client.close()
        log.info("all services ready")

    async def restart(
        self, key: str, how: signal.Signals = signal.SIGKILL, down_s: float = 0.0
    ) -> None:
        """Stop one process (by default as a crash would) and start it again, until it serves."""
        child = self.children[key]
        child.send_signal(how)
        await asyncio.to_thread(child.wait)
        await asyncio.sleep(down_s)
        name = self.instances[key]
        client = await self._connect()
        try:
            ready = await client.subscribe(subjects.ready(name), max_msgs=1)
            self.children[key] = self._spawn(name)
            await self._await_ready(ready, Counter([name]))
        finally:
            await client.close()

    def _nats_server(self, port: int) -> NatsServer:
        authorization = self._authorization(self.settings.data_dir)
        return NatsServer(self.settings.data_dir, port=port, authorization=authorization)

    async def _nats_cluster(self) -> Cluster:
        root = self.settings.data_dir / "nats"
        # Every node's config includes the one accounts file, from its own directory.
        authorization = self._authorization(root / "n0")
        return await start_cluster(root, self.nats_nodes, authorization)

    def _authorization(self, config_dir: Path) -> str:
        """A user per role, and the accounts of runtime credentials as last written
        (kept current once up), included from beside a config in ``config_dir``."""
        accounts = self.settings.data_dir / runtime_accounts.RUNTIME_ACCOUNTS_FILE
        runtime_accounts.ensure_file(accounts)
        include = os.path.relpath(accounts, config_dir)
        return render_authorization(self.credentials, include=include)

    async def _follow_runtime_accounts(self) -> None:
        path = self.settings.data_dir / runtime_accounts.RUNTIME_ACCOUNTS_FILE
        self._accounts = RuntimeAccounts(path)
        await self._accounts.start(
            self.nats_url,
            dict(connect_options(Role.SETUP, self.credentials[Role.SETUP])),
            dict(connect_options(Role.RELOAD, self.credentials[Role.RELOAD])),
        )

    async def _connect(self) -> Client:
        """The supervisor's own connection: it creates the streams, and hears services ready."""
        if self.credentials:
            options = connect_options(Role.SETUP, self.credentials[Role.SETUP])
            return await nats.connect(servers(self.nats_url), **options)
        return await nats.connect(servers(self.nats_url), **sign_in(self.settings, Role.SETUP))

    def _spawn(self, name: str) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            **self.extra_env,
            "MIDCALL_NATS_URL": self.nats_url,
            "MIDCALL_DATA_DIR": str(self.settings.data_dir),
        }
        if self.credentials:  # each service signs in as its own role
            env["MIDCALL_NATS_USER"] = name
            env["MIDCALL_NATS_PASSWORD"] = self.credentials[Role(name)]
        return subprocess.Popen(
            [sys.executable, "-m", "services.cli", "run", name],
            env=env,
            preexec_fn=die_with_parent,
        )

    async def restart_nats(self, down_s: float = 0.0) -> None:
        """SIGKILL the embedded nats-server and start it again on the same port and store."""
        if self.nats is None:
            raise RuntimeError("only an embedded nats-server can be restarted")
        self.nats.kill()
        await asyncio.sleep(down_s)
        self.nats = self._nats_server(int(self.nats_url.rsplit(":", 1)[1]))
        await asyncio.to_thread(self.nats.start)

    def pause(self, key: str, paused: bool) -> None:
        """SIGSTOP (a process that freezes: a long GC, a starved VM) or SIGCONT one process."""
        self.children[key].send_signal(signal.SIGSTOP if paused else signal.SIGCONT)

    async def _await_ready(self, ready: Subscription, waiting: Counter[str]) -> None:
        async with asyncio.timeout(READY_TIMEOUT_S):
            while any(count > 0 for count in waiting.values()):
                try:
                    msg = await ready.next_msg(timeout=0.5)
                except nats.errors.TimeoutError:
                    self.check_children()
                    continue
                waiting[msg.data.decode()] -= 1

    def check_children(self) -> None:
        for name, child in self.children.items():
            if child.poll() is not None:
                raise RuntimeError(f"service {name} exited with code {child.returncode}")

    async def stop(self) -> None:
        for child in self.children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        await asyncio.gather(*(asyncio.to_thread(self._reap, c) for c in self.children.values()))
        if self._accounts is not None:
            await self._accounts.stop()
        if self.nats is not None:
            await self.nats.astop()
        if self.cluster is not None:
            await self.cluster.stop()

    @staticmethod
    def _reap(child: subprocess.Popen[bytes]) -> None:
        try:
            child.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


async def run_up(settings: Settings) -> int:
    fabric = Fabric(settings)
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    try:
        await fabric.start()
        if fabric.new_admin_key is not None:
            key_file = settings.data_dir / ADMIN_KEY_FILE
            print(
                f"REST admin key (shown this once; kept in {key_file}):\n"
                f"    {fabric.new_admin_key}\n"
                "Send it as 'Authorization: Bearer <key>'; make account keys with it "
                "(POST /v1/accounts/<id>/keys).",
                flush=True,
            )
        if fabric.credentials:
            print(
                f"NATS for voice runtimes: user 'runtime', inbox prefix "
                f"'{inbox_prefix(Role.RUNTIME)}', password in "
                f"{settings.data_dir / CREDENTIALS_FILE} (key 'runtime').",
                flush=True,
            )
        print(
            f"Midcall is up: NATS {fabric.nats_url}, registry "
            f"http://{settings.host}:{settings.registry_port}, billing "
            f"http://{settings.host}:{settings.billing_port}. Ctrl-C stops it.",
            flush=True,
        )
        return await _watch(fabric, stopping)
    finally:
        await fabric.stop()


async def _watch(fabric: Fabric, stopping: asyncio.Event) -> int:
    while not stopping.is_set():
        try:
            fabric.check_children()
        except RuntimeError as exc:
            log.error("%s; stopping everything", exc)
            return 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), timeout=1.0)
    return 0
