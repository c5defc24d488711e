"""The sandbox's first process: a fresh process per call, forked before the call arrives.

It holds the interpreter with ``httpx`` imported and keeps spare children
forked and waiting (limits set, event loop made), so a call starts without
paying for a fork or an interpreter; no call sees another's state. Each
spare's socket is handed to the code-executor as it is forked (``spare``,
with the descriptor), and the code-executor talks to the call's process
directly: the job, the function's requests and its answer never pass
through here, so nothing of one call is in the memory later calls are
forked from. What is left here is what a process cannot do for itself:
its deadline (``run`` arms it), stopping it (``stop``), and telling how it
ended (``ended``: killed at its deadline, by a signal, or exited without an
answer). Stdlib and httpx only: nothing of Midcall's is mounted in the
sandbox but this folder.
"""

import asyncio
import gc
import json
import os
import selectors
import signal
import socket
import sys
import time
from collections import OrderedDict, deque
from types import CodeType
from typing import Any

from . import child  # imports httpx once, for every child to inherit
from .frames import Buffer, pack

CODE_CACHE = 64
# The account's latest calls: while any of them made requests, spares are forked warm.
RECENT_CALLS = 8
PR_SET_DUMPABLE = 4
# How soon a spare is forked again when the jail's process limit refused one.
FORK_RETRY_S = 0.05


class Process:
    """A forked child: a spare the code-executor holds until it gives it a call."""

    def __init__(self, number: int, pid: int) -> None:
        self.number = number
        self.pid = pid
        self.deadline = float("inf")
        self.killed_for: str | None = None  # "timeout" or "stopped"


class Zygote:
    def __init__(
        self, sock: socket.socket, limits: dict[str, int], modules: frozenset[str], spares: int
    ) -> None:
        self.sock = sock
        self.limits = limits
        self.modules = modules
        self.spares_wanted = spares
        self.buffer = Buffer()
        self.spares = 0
        self.processes: dict[int, Process] = {}  # by number, spares and calls
        self.by_pid: dict[int, Process] = {}
        self.numbered = 0
        self.codes: OrderedDict[str, CodeType] = OrderedDict()
        self.requesting: deque[bool] = deque(maxlen=RECENT_CALLS)
        self.selector = selectors.DefaultSelector()
        self.wakeup_r, self.wakeup_w = os.pipe()
        os.set_blocking(self.wakeup_w, False)
        signal.set_wakeup_fd(self.wakeup_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.selector.register(self.wakeup_r, selectors.EVENT_READ, self._drain_wakeup)
        self.selector.register(sock, selectors.EVENT_READ, self._from_executor)

    def serve(self) -> None:
        self._send({"op": "ready"})
        self._top_up()
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

    def _send(self, header: dict[str, Any]) -> None:
        self.sock.sendall(pack(header))

    def _wait(self) -> float | None:
        deadlines = [
            p.deadline
            for p in self.processes.values()
            if p.killed_for is None and p.deadline != float("inf")
        ]
        if self.spares < self.spares_wanted:
            deadlines.append(time.monotonic() + FORK_RETRY_S)
        return max(0.0, min(deadlines) - time.monotonic()) if deadlines else None

    def _drain_wakeup(self) -> None:
        os.read(self.wakeup_r, 4096)

    def _from_executor(self) -> None:
        data = self.sock.recv(1 << 16)
        if not data:
            sys.exit(0)  # the code-executor is gone, and with it every call
        for header, _ in self.buffer.feed(data):
            getattr(self, "_on_" + header["op"])(header)

    def _on_run(self, header: dict[str, Any]) -> None:
        """The code-executor gave spare ``n`` a call: its deadline starts now."""
        process = self.processes.get(header["n"])
        if process is None or process.deadline != float("inf"):
            return  # it died waiting (its ending is told already), or is running
        self.spares -= 1
        process.deadline = time.monotonic() + header["timeout_s"]
        self._compile(header["code"])  # for the spares forked from now on
        self.requesting.append("httpx" in header["code"])

    def _on_stop(self, header: dict[str, Any]) -> None:
        process = self.processes.get(header["n"])
        if process is not None:
            self._kill(process, "stopped")

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

    def _top_up(self) -> None:
        while self.spares < self.spares_wanted:
            try:
                self._fork()
            except BlockingIOError:
                return  # at the process limit for now: retried soon, a call's end makes room

    def _fork(self) -> None:
        ours, theirs = socket.socketpair()
        try:
            pid = os.fork()
        except OSError:
            ours.close()
            theirs.close()
            raise
        if pid == 0:
            ours.close()
            self._become_child(theirs)
        theirs.close()
        self.numbered += 1
        process = Process(self.numbered, pid)
        self.processes[process.number] = self.by_pid[pid] = process
        self.spares += 1
        try:
            frame = pack({"op": "spare", "n": process.number})
            sent = socket.send_fds(self.sock, [frame], [ours.fileno()])
            self.sock.sendall(frame[sent:])
        finally:
            ours.close()  # the code-executor's now: the call's frames never pass through here

    def _become_child(self, sock: socket.socket) -> None:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        self.selector.close()
        self.sock.close()
        os.close(self.wakeup_r)
        os.close(self.wakeup_w)
        child.serve(sock, self.limits, dict(self.codes), self.modules, any(self.requesting))

    def _kill(self, process: Process, reason: str) -> None:
        if process.killed_for is None:
            process.killed_for = reason
            os.kill(process.pid, signal.SIGKILL)

    def _expire(self) -> None:
        now = time.monotonic()
        for process in list(self.processes.values()):
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
            if process is None:
                continue
            del self.processes[process.number]
            if process.deadline == float("inf"):
                self.spares -= 1  # a spare that died waiting for its call
            ending = {"op": "ended", "n": process.number, "error": _ending(process, status)}
            self._send(ending)


def _ending(process: Process, status: int) -> dict[str, str]:
    """How a process ended, as the code-executor tells it when the process sent no answer."""
    if process.killed_for == "timeout":
        return {"kind": "timeout", "message": "the function did not finish in time"}
    if process.killed_for == "stopped":
        return {"kind": "cancelled", "message": "the call was stopped"}
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
    the system call seccomp refuses, and would let a call read the zygote's memory and its
    sibling calls' (their jobs, with their secrets). SIGINT ignored: the PID namespace's
    init only gets signals it handles, and Python handles SIGINT, so one
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
    asyncio.run(child.warm_request())
    gc.freeze()


def main() -> None:
    _guarded()
    _warmed()
    settings = json.loads(sys.argv[1])
    sock = socket.socket(fileno=settings["fd"])
    Zygote(sock, settings["limits"], frozenset(settings["modules"]), settings["spares"]).serve()


if __name__ == "__main__":
    main()
