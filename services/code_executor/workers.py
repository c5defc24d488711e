"""Each account's jail, started on its first call and stopped when idle.

A jail is never shared between accounts: an account's calls run in
processes forked from its own zygote, which holds nothing of any other
account's. A ``Worker`` is one jail seen from outside: it sends jobs,
answers the function's HTTP requests through the egress, and hands back
each call's ``done``. The ``Pool`` keeps one per account, starts it on
demand (the cold start), bounds the calls in it, and stops jails idle for
``MIDCALL_SANDBOX_IDLE_S``.
"""

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from services.code_executor.jail import Jail, SandboxUnavailable
from services.code_executor.sandbox.frames import PREFIX, BadFrame, Frame, header, pack, sizes
from shared.observability.metrics import SANDBOX_STARTS, SANDBOXES

log = logging.getLogger("midcall.code_executor")
START_TIMEOUT_S = 10.0
STDERR_KEPT = 2048

# A function's HTTP request (header, body) -> the reply frame sent back into the jail.
Egress = Callable[[dict[str, Any], bytes], Awaitable[Frame]]


@dataclass
class Call:
    """One call's end of the jail: where its requests, log lines and answer go."""

    egress: Egress
    logged: Callable[[str, str], None]
    done: asyncio.Future[dict[str, Any]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class Worker:
    """One account's jail: its zygote, and the calls running in it."""

    def __init__(
        self,
        process: asyncio.subprocess.Process,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.process = process
        self.reader = reader
        self.writer = writer
        self.calls: dict[int, Call] = {}
        self.next_id = 0
        self.idle_since = time.monotonic()
        self._requests: set[asyncio.Task[None]] = set()
        self._listening = asyncio.create_task(self._listen())

    @classmethod
    async def start(cls, jail: Jail, uid: int | None) -> "Worker":
        ours, theirs = socket.socketpair()
        try:
            process = await _spawn(jail, uid, theirs)
        except OSError as exc:
            ours.close()
            raise SandboxUnavailable(f"nsjail could not be started: {exc}") from exc
        finally:
            theirs.close()
        reader, writer = await asyncio.open_connection(sock=ours)
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                first, _ = await read_frame(reader)
        except (TimeoutError, asyncio.IncompleteReadError, BadFrame) as exc:
            _kill(process)
            raise SandboxUnavailable(
                f"the sandbox did not start: {await _stderr(process)}"
            ) from exc
        if first.get("op") != "ready":
            _kill(process)
            raise SandboxUnavailable(f"the sandbox answered {first!r} instead of ready")
        return cls(process, reader, writer)

    @property
    def alive(self) -> bool:
        return not self._listening.done()

    async def run(self, job: dict[str, Any], call: Call) -> dict[str, Any]:
        """The call's ``done`` header: ``result`` or ``error`` ({kind, message})."""
        self.next_id += 1
        call_id = self.next_id
        self.calls[call_id] = call
        try:
            self.writer.write(pack({**job, "op": "run", "id": call_id}))
            return await call.done
        except asyncio.CancelledError:
            self._send({"op": "cancel", "id": call_id})
            raise
        finally:
            del self.calls[call_id]
            if not self.calls:
                self.idle_since = time.monotonic()

    def _send(self, frame_header: dict[str, Any], body: bytes = b"") -> None:
        if not self.writer.is_closing():
            self.writer.write(pack(frame_header, body))

    async def _listen(self) -> None:
        try:
            while True:
                frame_header, body = await read_frame(self.reader)
                self._received(frame_header, body)
        except (asyncio.IncompleteReadError, ConnectionError, BadFrame):
            pass
        finally:
            reason = await _stderr(self.process) if self.process.returncode is not None else ""
            for call in self.calls.values():
                if not call.done.done():
                    call.done.set_result(_gone(reason))

    def _received(self, frame_header: dict[str, Any], body: bytes) -> None:
        call = self.calls.get(frame_header.get("id", -1))
        if call is None:
            return  # a call cancelled meanwhile
        op = frame_header.get("op")
        if op == "done" and not call.done.done():
            call.done.set_result(frame_header)
        elif op == "log":
            call.logged(str(frame_header.get("level")), str(frame_header.get("message")))
        elif op == "http":
            task = asyncio.create_task(self._request(frame_header, body, call))
            self._requests.add(task)
            task.add_done_callback(self._requests.discard)

    async def _request(self, frame_header: dict[str, Any], body: bytes, call: Call) -> None:
        reply, content = await call.egress(frame_header, body)
        self._send(
            {**reply, "op": "http_reply", "id": frame_header["id"], "req": frame_header.get("req")},
            content,
        )

    async def stop(self) -> None:
        self.writer.close()
        _kill(self.process)
        await self.process.wait()
        await asyncio.gather(self._listening, *self._requests, return_exceptions=True)


async def _spawn(jail: Jail, uid: int | None, theirs: socket.socket) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *jail.command(uid, theirs.fileno()),
        pass_fds=(theirs.fileno(),),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env={},  # nothing of ours reaches the jail, not even nsjail
    )


def _kill(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):  # it has ended already
        process.kill()


def _gone(reason: str) -> dict[str, Any]:
    shown = f": {reason}" if reason else ""
    return {"op": "done", "error": {"kind": "sandbox", "message": f"the sandbox stopped{shown}"}}


async def read_frame(reader: asyncio.StreamReader) -> Frame:
    header_size, body_size = sizes(await reader.readexactly(PREFIX.size))
    return header(await reader.readexactly(header_size)), await reader.readexactly(body_size)


async def _stderr(process: asyncio.subprocess.Process) -> str:
    """What nsjail said about why it stopped, briefly."""
    if process.stderr is None:
        return ""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(1):
            data = await process.stderr.read(STDERR_KEPT)
            return data.decode(errors="replace").strip()
    return ""


class Pool:
    """One worker per account, each running at most ``calls_per_account`` calls at once.

    ``jail`` None: the sandbox cannot be made here (``unavailable`` says why);
    every call is then refused with that reason, and nothing runs unsandboxed.
    """

    def __init__(
        self,
        jail: Jail | None,
        uids: "Uids",
        calls_per_account: int,
        idle_s: float,
        unavailable: str | None = None,
    ) -> None:
        self.jail = jail
        self.unavailable = unavailable
        self._checked = False  # a jail started and stopped once, here
        self.uids = uids
        self.calls_per_account = calls_per_account
        self.idle_s = idle_s
        self.workers: dict[str, Worker] = {}
        self._uid_of: dict[str, int | None] = {}
        self._starting: dict[str, asyncio.Task[Worker]] = {}
        self._slots: dict[str, asyncio.Semaphore] = {}

    async def run(self, account: str, job: dict[str, Any], call: Call) -> dict[str, Any]:
        slots = self._slots.setdefault(account, asyncio.Semaphore(self.calls_per_account))
        async with slots:
            worker = await self._worker(account)
            return await worker.run(job, call)

    async def _worker(self, account: str) -> Worker:
        worker = self.workers.get(account)
        if worker is not None and worker.alive:
            return worker
        if worker is not None:
            await self._retire(account)
        starting = self._starting.get(account)
        if starting is None:
            starting = self._starting[account] = asyncio.create_task(self._start(account))
            starting.add_done_callback(lambda _: self._starting.pop(account, None))
        return await asyncio.shield(starting)

    async def _start(self, account: str) -> Worker:
        if self.jail is None:
            raise SandboxUnavailable(self.unavailable or "no sandbox")
        uid = self.uids.take()
        started = time.perf_counter()
        try:
            worker = await Worker.start(self.jail, uid)
        except BaseException:
            self.uids.give_back(uid)
            raise
        SANDBOX_STARTS.observe(time.perf_counter() - started)
        self.workers[account] = worker
        SANDBOXES.set(len(self.workers))
        self._uid_of[account] = uid
        log.info("sandbox started for account %s", account)
        return worker

    async def _retire(self, account: str) -> None:
        worker = self.workers.pop(account)
        SANDBOXES.set(len(self.workers))
        await worker.stop()
        self.uids.give_back(self._uid_of.pop(account))

    async def available(self, account: str | None = None) -> str | None:
        """Why python tools cannot run here, or None: a jail started.

        Checked when asked (the registry asks before accepting a python tool), not
        at start, so a code-executor that never runs one never pays for a jail. With
        an ``account``, the jail started is that account's, and it stays warm for
        the tool's first call; without, one is started and stopped once.
        """
        if self.jail is None:
            return self.unavailable
        try:
            if account is not None:
                await self._worker(account)
            elif not self._checked:
                await self._start_and_stop()
        except SandboxUnavailable as exc:
            log.error("python tools cannot run here: %s", exc)
            return str(exc)
        self._checked = True
        return None

    async def _start_and_stop(self) -> None:
        assert self.jail is not None
        uid = self.uids.take()
        try:
            worker = await Worker.start(self.jail, uid)
            await worker.stop()
        finally:
            self.uids.give_back(uid)

    async def reap(self) -> None:
        """Stop jails no call has used for ``idle_s``."""
        now = time.monotonic()
        for account, worker in list(self.workers.items()):
            if not worker.calls and now - worker.idle_since >= self.idle_s:
                log.info(
                    "sandbox of account %s stopped after %.0f s idle",
                    account,
                    now - worker.idle_since,
                )
                await self._retire(account)

    async def close(self) -> None:
        for account in list(self.workers):
            await self._retire(account)


class Uids:
    """A uid of its own for each jail, when jails run without a user namespace (as root)."""

    def __init__(self, base: int | None, count: int = 10_000) -> None:
        self._free = list(range(base + count - 1, base - 1, -1)) if base is not None else []
        self._namespaced = base is None

    def take(self) -> int | None:
        if self._namespaced:
            return None
        if not self._free:
            raise SandboxUnavailable("every sandbox uid is in use")
        return self._free.pop()

    def give_back(self, uid: int | None) -> None:
        if uid is not None:
            self._free.append(uid)
