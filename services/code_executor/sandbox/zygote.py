"""The sandbox's first process: a fresh process per call, forked before the call arrives.

It holds the interpreter with ``httpx`` imported and keeps a spare child
forked and waiting (limits set, event loop made), so a call starts without
paying for a fork or an interpreter; no call sees another's state. It talks
to the code-executor over one socket (``run``, ``http_reply`` and ``cancel``
in; ``ready``, ``http``, ``log`` and ``done`` out, each with the call's id),
and to each child over a socket of the child's own, so a child can neither
read nor forge another call's frames. Stdlib and httpx only: nothing of
Midcall's is mounted in the sandbox but this folder.
"""

import asyncio
import contextlib
import gc
import json
import os
import selectors
import signal
import socket
import sys
import time
from collections import OrderedDict
from types import CodeType
from typing import Any

import httpx

from . import child  # imports httpx once, for every child to inherit
from .frames import BadFrame, Buffer, pack

CODE_CACHE = 64
# The failures a call's process reports itself (``child._failure``). Its other endings
# (timeout, cpu, cancelled, crashed) are the zygote's to tell, and a process that says
# anything else forged its answer: the code-executor never reads what it made up.
CHILD_FAILURES = frozenset({"exception", "memory", "output", "invalid_result"})
MESSAGE_CHARS = 1000
PR_SET_DUMPABLE = 4


class Process:
    """A forked child: a spare until a call is handed to it."""

    def __init__(self, pid: int, sock: socket.socket, output_bytes: int) -> None:
        self.pid = pid
        self.sock = sock
        self.call_id: int | None = None
        self.deadline = float("inf")
        self.buffer = Buffer()
        self.reported = False
        self.ended = False  # its socket is closed
        self.status: int | None = None  # its wait status, once reaped
        self.killed_for: str | None = None
        self.output_left = output_bytes  # counted here too (_spend_output)


class Zygote:
    def __init__(
        self, sock: socket.socket, limits: dict[str, int], modules: frozenset[str], spares: int
    ) -> None:
        self.sock = sock
        self.limits = limits
        self.modules = modules
        self.spares_wanted = spares
        self.buffer = Buffer()
        self.spares: list[Process] = []
        self.calls: dict[int, Process] = {}
        self.by_pid: dict[int, Process] = {}
        self.codes: OrderedDict[str, CodeType] = OrderedDict()
        self.selector = selectors.DefaultSelector()
        self.wakeup_r, wakeup_w = os.pipe()
        os.set_blocking(wakeup_w, False)
        signal.set_wakeup_fd(wakeup_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.selector.register(self.wakeup_r, selectors.EVENT_READ, self._drain_wakeup)
        self.selector.register(sock, selectors.EVENT_READ, self._from_executor)

    def serve(self) -> None:
        self._top_up()
        self._send({"op": "ready"})
        while True:
            self._handle(self.selector.select(self._wait()))
            while ready := self.selector.select(0):
                self._handle(ready)  # a fork takes a millisecond: not while frames wait
            self._top_up()

    def _handle(self, ready: list[tuple[selectors.SelectorKey, int]]) -> None:
        for key, _ in ready:
            key.data()
        self._expire()
        self._reap()

    def _send(self, header: dict[str, Any], body: bytes = b"") -> None:
        self.sock.sendall(pack(header, body))

    def _wait(self) -> float | None:
        deadlines = [p.deadline for p in self.calls.values() if p.killed_for is None]
        return max(0.0, min(deadlines) - time.monotonic()) if deadlines else None

    def _drain_wakeup(self) -> None:
        os.read(self.wakeup_r, 4096)

    def _from_executor(self) -> None:
        data = self.sock.recv(1 << 16)
        if not data:
            sys.exit(0)  # the code-executor is gone, and with it every call
        for header, body in self.buffer.feed(data):
            getattr(self, "_on_" + header["op"])(header, body)

    def _on_run(self, job: dict[str, Any], body: bytes) -> None:
        call_id = job.pop("id")
        process = self.spares.pop(0) if self.spares else self._fork_now()
        if process is None:
            busy = {"kind": "busy", "message": "the sandbox has no process to spare"}
            self._send({"op": "done", "id": call_id, "error": busy})
            return
        process.call_id = call_id
        process.deadline = time.monotonic() + job.pop("timeout_s")
        self.calls[call_id] = process
        self._compile(job["code"])  # for the spares forked from now on
        with contextlib.suppress(OSError):  # it died waiting: reported when it is reaped
            process.sock.sendall(pack(job))

    def _compile(self, source: str) -> None:
        code = self.codes.pop(source, None)
        if code is None:
            try:
                code = compile(source, child.TOOL_FILE, "exec")
            except (SyntaxError, ValueError, MemoryError, RecursionError):
                return  # the child compiles it again and reports the error
        self.codes[source] = code
        while len(self.codes) > CODE_CACHE:
            self.codes.popitem(last=False)

    def _fork(self) -> Process:
        ours, theirs = socket.socketpair()
        try:
            pid = os.fork()
        except OSError:
            ours.close()
            theirs.close()
            raise
        if pid == 0:
            self._become_child(theirs)
        theirs.close()
        process = Process(pid, ours, self.limits["output_bytes"])
        self.by_pid[pid] = process
        self.selector.register(ours, selectors.EVENT_READ, lambda: self._from_child(process))
        return process

    def _fork_now(self) -> Process | None:
        """A process for a call, or None when the jail's process limit refuses one even
        after the calls that have just answered are reaped (the call is refused, not us)."""
        for _ in range(2):
            try:
                return self._fork()
            except BlockingIOError:
                self._reap()
        return None

    def _top_up(self) -> None:
        while len(self.spares) < self.spares_wanted:
            try:
                self.spares.append(self._fork())
            except BlockingIOError:
                return  # at the process limit for now: a call's end makes room

    def _become_child(self, sock: socket.socket) -> None:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        self.selector.close()
        for process in [*self.spares, *self.calls.values()]:
            process.sock.close()
        self.sock.close()
        child.serve(sock, self.limits, dict(self.codes), self.modules)

    def _on_http_reply(self, header: dict[str, Any], body: bytes) -> None:
        process = self.calls.get(header.pop("id"))
        if process is not None and not process.ended:
            with contextlib.suppress(OSError):  # the child is gone: reported when reaped
                process.sock.sendall(pack(header, body))

    def _on_cancel(self, header: dict[str, Any], body: bytes) -> None:
        process = self.calls.get(header["id"])
        if process is not None:
            self._kill(process, "cancelled")

    def _from_child(self, process: Process) -> None:
        try:
            data = process.sock.recv(1 << 16)
            frames = process.buffer.feed(data) if data else []
        except (OSError, BadFrame):
            data, frames = b"", []
        for header, body in frames:
            self._forward(process, header, body)
        if not data:
            self._closed(process)

    def _forward(self, process: Process, header: dict[str, Any], body: bytes) -> None:
        op = header.get("op")
        if process.call_id is None or process.reported or op not in ("http", "log", "done"):
            return  # a spare says nothing; a call says nothing after its answer
        if process.killed_for is not None:
            return  # nor one being stopped
        if not _spend_output(process, header):
            self._kill(process, "output")
            return
        process.reported = op == "done"
        told = _answer(header) if op == "done" else header
        self._send({**told, "op": op, "id": process.call_id}, body)

    def _closed(self, process: Process) -> None:
        self.selector.unregister(process.sock)
        process.sock.close()
        process.ended = True
        if process in self.spares:
            self.spares.remove(process)
        self._finish(process)

    def _kill(self, process: Process, reason: str) -> None:
        if process.killed_for is None and process.status is None:
            process.killed_for = reason
            os.kill(process.pid, signal.SIGKILL)

    def _expire(self) -> None:
        now = time.monotonic()
        for process in list(self.calls.values()):
            if process.deadline <= now:
                self._kill(process, "timeout")

    def _reap(self) -> None:
        while self.by_pid:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            process = self.by_pid.pop(pid, None)
            if process is not None:
                process.status = status
                self._finish(process)

    def _finish(self, process: Process) -> None:
        if not (process.ended and process.status is not None) or process.call_id is None:
            return
        del self.calls[process.call_id]
        if not process.reported:
            self._send({"op": "done", "id": process.call_id, "error": _ending(process)})


def _spend_output(process: Process, header: dict[str, Any]) -> bool:
    """The output cap counted again, as the child counts it: the child's own count is in
    the customer's hands (``sys.stdout.channel`` is reachable), this one is not."""
    if header.get("op") == "log":
        process.output_left -= len(str(header.get("message")).encode())
    elif header.get("op") == "done" and "result" in header:
        process.output_left -= len(json.dumps(header["result"]))
    return process.output_left >= 0


def _answer(done: dict[str, Any]) -> dict[str, Any]:
    """A call's ``done`` as the code-executor may read it: a result, or a failure a call's
    process reports, with a message of bounded length."""
    if "result" in done:
        return {"result": done["result"]}
    error = done.get("error")
    if isinstance(error, dict) and error.get("kind") in CHILD_FAILURES:
        return {
            "error": {"kind": error["kind"], "message": str(error.get("message"))[:MESSAGE_CHARS]}
        }
    return {"error": {"kind": "invalid_result", "message": "the function sent a forged answer"}}


def _ending(process: Process) -> dict[str, str]:
    if process.killed_for == "output":
        return {"kind": "output", "message": "the function printed or logged more than it may"}
    if process.killed_for == "timeout":
        return {"kind": "timeout", "message": "the function did not finish in time"}
    if process.killed_for == "cancelled":
        return {"kind": "cancelled", "message": "the call was cancelled"}
    status = process.status or 0
    if os.WIFSIGNALED(status):
        name = signal.Signals(os.WTERMSIG(status)).name
        if name in ("SIGXCPU", "SIGKILL"):
            return {"kind": "cpu", "message": "the function used more CPU time than it may"}
        return {"kind": "crashed", "message": f"the function's process died ({name})"}
    code = os.waitstatus_to_exitcode(status)
    return {
        "kind": "crashed",
        "message": f"the function's process exited ({code}) without an answer",
    }


def _guarded() -> None:
    """What a call's process could otherwise do to the zygote, which runs as the same uid.

    Not dumpable (inherited by every child): ``/proc/<pid>/mem`` is ptrace's access without
    the system call seccomp refuses, and would let a call read the zygote's memory (every
    job it passed on, with its secrets) and its sibling calls'. SIGINT ignored: the PID
    namespace's init only gets signals it handles, and Python handles SIGINT, so one
    ``os.kill(1, SIGINT)`` would stop the jail and every call in it.
    """
    import ctypes

    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _warmed() -> None:
    """What each call's process would otherwise pay again, paid once here: httpx's first
    request (lazy imports, codecs, the client's set-up), and the interpreter's objects
    frozen out of the garbage collector, whose passes in a child would touch, and so
    copy, every page the fork shares."""

    async def request() -> None:
        transport = httpx.MockTransport(lambda _: httpx.Response(200, json={"warm": True}))
        async with httpx.AsyncClient(transport=transport, timeout=1.0) as client:
            (await client.post("http://warm.invalid/", params={"q": 1}, json={})).json()

    asyncio.run(request())
    gc.freeze()


def main() -> None:
    _guarded()
    _warmed()
    settings = json.loads(sys.argv[1])
    sock = socket.socket(fileno=settings["fd"])
    Zygote(sock, settings["limits"], frozenset(settings["modules"]), settings["spares"]).serve()


if __name__ == "__main__":
    main()
