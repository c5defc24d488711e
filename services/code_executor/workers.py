"""Each account's jail, started on its first call and stopped when idle.

A jail is never shared between accounts: an account's calls run in
processes forked from its own zygote, which holds nothing of any other
account's. A ``Worker`` is one jail seen from outside. The zygote lends it
each process it forks, with the process's socket; a call takes one, and its
job, its function's HTTP requests (answered through the egress), its log
lines and its answer go over that socket alone. The zygote is only told
which process runs a call and for how long, and says how a process ended
when it ended without an answer. The ``Pool`` keeps one worker per account,
starts it on demand (the cold start), bounds the calls in it, and stops
jails idle for ``MIDCALL_SANDBOX_IDLE_S``.
"""

import asyncio
import contextlib
import contextvars
import json
import logging
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from services.code_executor.jail import Jail, SandboxUnavailable
from services.code_executor.links import Link
from services.code_executor.sandbox.frames import Frame
from shared.observability.metrics import SANDBOX_STARTS, SANDBOXES

log = logging.getLogger("midcall.code_executor")
START_TIMEOUT_S = 10.0
STDERR_KEPT = 2048
# The failures a call's process reports itself (``child._failure``). Its other endings
# (timeout, cpu, cancelled, crashed) are the zygote's to tell, and a process that says
# anything else forged its answer.
CHILD_FAILURES = frozenset({"exception", "memory", "output", "invalid_result"})
MESSAGE_CHARS = 1000

# A function's HTTP request (header, body) -> the reply frame sent back into the jail.
Egress = Callable[[dict[str, Any], bytes], Awaitable[Frame]]


@dataclass
class Call:
    """One call's end of the jail: where its requests, log lines and answer go."""

    egress: Egress
    logged: Callable[[str, str], None]
    timeout_s: float
    # The run's (its span): each of the function's requests is sent in a copy of it.
    context: contextvars.Context = field(default_factory=contextvars.copy_context)
    done: asyncio.Future[dict[str, Any]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def answer(self, done: dict[str, Any]) -> None:
        if not self.done.done():
            self.done.set_result(done)


class Lent:
    """A process the zygote forked and lent: a spare, then one call's."""

    def __init__(self, worker: "Worker", number: int, sock: socket.socket) -> None:
        self.worker = worker
        self.number = number
        self.call: Call | None = None
        self.output_left = worker.output_bytes
        self.requests: set[asyncio.Task[None]] = set()
        self.link = Link(sock, self._received, self._closed)

    def start(self, job: dict[str, Any], call: Call) -> None:
        self.call = call
        self.link.send(job)

    def _received(self, header: dict[str, Any], body: bytes) -> None:
        call = self.call
        if call is None or call.done.done():
            return  # a spare says nothing; a call says nothing after its answer
        op = header.get("op")
        if not self._spend_output(header):
            call.answer(_error("output", "the function printed or logged more than it may"))
            self.worker.stop_process(self.number)
        elif op == "done":
            call.answer(_answer(header))
            self.link.close()  # it exits now: its end of the socket is not waited for
        elif op == "log":
            call.logged(str(header.get("level")), str(header.get("message")))
        elif op == "http":
            task = asyncio.create_task(self._request(header, body), context=call.context.copy())
            self.requests.add(task)
            task.add_done_callback(self.requests.discard)

    def _spend_output(self, header: dict[str, Any]) -> bool:
        """The output cap counted again, as the process counts it: its own count is in the
        customer's hands (``sys.stdout.channel`` is reachable), this one is not."""
        if header.get("op") == "log":
            self.output_left -= len(str(header.get("message")).encode())
        elif header.get("op") == "done" and "result" in header:
            self.output_left -= len(json.dumps(header["result"]))
        return self.output_left >= 0

    async def _request(self, header: dict[str, Any], body: bytes) -> None:
        assert self.call is not None
        reply, content = await self.call.egress(header, body)
        self.link.send({**reply, "op": "http_reply", "req": header.get("req")}, content)

    def _closed(self) -> None:
        if self.call is None:
            self.worker.spare_lost(self)
        elif self.link.malformed and not self.call.done.done():
            self.call.answer(_error("invalid_result", "the function sent something not a frame"))
            self.worker.stop_process(self.number)
        # else the zygote tells how it ended (``ended``), which answers the call

    def ended(self, ending: dict[str, Any]) -> None:
        """The zygote reaped it: what it sent before is all there is, else its ending."""
        self.link.drain()
        if self.call is not None:
            self.call.answer({"error": ending})

    def finish(self) -> None:
        for task in self.requests:
            task.cancel()
        self.link.close()


class Worker:
    """One account's jail: its zygote, the processes it lent, the calls running in them."""

    def __init__(
        self, process: asyncio.subprocess.Process, sock: socket.socket, output_bytes: int
    ) -> None:
        self.process = process
        self.output_bytes = output_bytes
        self.lent: dict[int, Lent] = {}
        self.spares: deque[Lent] = deque()
        self.waiting: deque[asyncio.Future[Lent | None]] = deque()
        self.busy = 0
        self.idle_since = time.monotonic()
        loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[bool] = loop.create_future()
        self.reason: asyncio.Future[str] = loop.create_future()  # why it stopped, once it has
        self._telling: asyncio.Task[None] | None = None
        self.link = Link(sock, self._from_zygote, self._zygote_gone, takes_fds=True)

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
        worker = cls(process, ours, jail.limits.output_bytes)
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                started = await worker.ready
        except TimeoutError:
            started = False
        if not started:
            await worker.stop()
            raise SandboxUnavailable(f"the sandbox did not start: {await worker.reason}")
        return worker

    @property
    def alive(self) -> bool:
        return self.link.open

    async def run(self, job: dict[str, Any], call: Call) -> dict[str, Any]:
        """The call's answer: ``result`` or ``error`` ({kind, message})."""
        lent = await self._spare()
        if lent is None:
            return _gone(await self.reason)
        self.busy += 1
        try:
            lent.start(job, call)
            run = {"op": "run", "n": lent.number, "timeout_s": call.timeout_s, "code": job["code"]}
            self.link.send(run)
            return await call.done
        except asyncio.CancelledError:
            self.stop_process(lent.number)
            raise
        finally:
            self.lent.pop(lent.number, None)
            lent.finish()
            self.busy -= 1
            if not self.busy:
                self.idle_since = time.monotonic()

    async def _spare(self) -> Lent | None:
        while self.spares:
            spare = self.spares.popleft()
            if spare.link.open:
                return spare
        if not self.link.open:
            return None
        waiter: asyncio.Future[Lent | None] = asyncio.get_running_loop().create_future()
        self.waiting.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and (lent := waiter.result()):
                self.spares.appendleft(lent)  # handed over as the call was cancelled
            raise

    def stop_process(self, number: int) -> None:
        self.link.send({"op": "stop", "n": number})

    def spare_lost(self, lent: Lent) -> None:
        with contextlib.suppress(ValueError):
            self.spares.remove(lent)

    def _from_zygote(self, header: dict[str, Any], _: bytes) -> None:
        op = header.get("op")
        if op == "spare":
            if not self.link.fds:
                self.link.close()  # a spare without its socket: this is not our zygote
                return
            sock = socket.socket(fileno=self.link.fds.popleft())
            self._lend(Lent(self, header["n"], sock))
        elif op == "ended" and (lent := self.lent.get(header.get("n", -1))) is not None:
            if lent.call is None:
                self.spare_lost(lent)
                del self.lent[lent.number]
            lent.ended(header.get("error") or _error("crashed", "the function's process died"))
        elif op == "ready" and not self.ready.done():
            self.ready.set_result(True)

    def _lend(self, lent: Lent) -> None:
        self.lent[lent.number] = lent
        while self.waiting:
            waiter = self.waiting.popleft()
            if not waiter.done():
                waiter.set_result(lent)
                return
        self.spares.append(lent)

    def _zygote_gone(self) -> None:
        if not self.ready.done():
            self.ready.set_result(False)
        for waiter in self.waiting:
            if not waiter.done():
                waiter.set_result(None)
        self._telling = asyncio.create_task(self._tell_why())

    async def _tell_why(self) -> None:
        """Every call still running fails with what nsjail said as the jail stopped."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1):
                await self.process.wait()
        reason = await _stderr(self.process)
        self.reason.set_result(reason)
        for lent in list(self.lent.values()):
            if lent.call is not None:
                lent.call.answer(_gone(reason))
            lent.finish()

    async def stop(self) -> None:
        self.link.close()
        _kill(self.process)
        await self.process.wait()
        if self._telling is not None:
            await self._telling


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


def _error(kind: str, message: str) -> dict[str, Any]:
    return {"error": {"kind": kind, "message": message}}


def _answer(done: dict[str, Any]) -> dict[str, Any]:
    """A process's ``done`` as the code-executor may read it: a result, or a failure a
    call's process reports, with a message of bounded length."""
    if "result" in done:
        return {"result": done["result"]}
    error = done.get("error")
    if isinstance(error, dict) and error.get("kind") in CHILD_FAILURES:
        return _error(error["kind"], str(error.get("message"))[:MESSAGE_CHARS])
    return _error("invalid_result", "the function sent a forged answer")


def _gone(reason: str) -> dict[str, Any]:
    shown = f": {reason}" if reason else ""
    return _error("sandbox", f"the sandbox stopped{shown}")


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
            if not worker.busy and now - worker.idle_since >= self.idle_s:
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
