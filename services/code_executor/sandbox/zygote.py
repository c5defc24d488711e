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

import contextlib
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

from . import child  # imports httpx once, for every child to inherit
from .frames import BadFrame, Buffer, pack

CODE_CACHE = 64


class Process:
    """A forked child: a spare until a call is handed to it."""

    def __init__(self, pid: int, sock: socket.socket) -> None:
        self.pid = pid
        self.sock = sock
        self.call_id: int | None = None
        self.deadline = float("inf")
        self.buffer = Buffer()
        self.reported = False
        self.ended = False  # its socket is closed
        self.status: int | None = None  # its wait status, once reaped
        self.killed_for: str | None = None


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
        process = self.spares.pop(0) if self.spares else self._fork()
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
        pid = os.fork()
        if pid == 0:
            self._become_child(theirs)
        theirs.close()
        process = Process(pid, ours)
        self.by_pid[pid] = process
        self.selector.register(ours, selectors.EVENT_READ, lambda: self._from_child(process))
        return process

    def _top_up(self) -> None:
        while len(self.spares) < self.spares_wanted:
            self.spares.append(self._fork())

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
        process.reported = op == "done"
        self._send({**header, "op": op, "id": process.call_id}, body)

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


def _ending(process: Process) -> dict[str, str]:
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


def main() -> None:
    settings = json.loads(sys.argv[1])
    sock = socket.socket(fileno=settings["fd"])
    Zygote(sock, settings["limits"], frozenset(settings["modules"]), settings["spares"]).serve()


if __name__ == "__main__":
    main()
