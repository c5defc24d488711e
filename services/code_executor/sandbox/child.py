"""One call of a customer's function, in a process forked from the zygote for it.

Everything here runs as the customer's code does: limits first, then the
code's module, then the function. What the call may do beyond computing
(HTTP, logging) goes straight to the code-executor over the call's own
socket, which the zygote handed it when this process was forked. The
namespace's import check only turns plain imports of other modules into a
clear error; the sandbox around the process (namespaces, seccomp, rlimits)
is what contains the code.
"""

import asyncio
import builtins
import json
import os
import resource
import socket
import sys
import traceback
from types import CodeType
from typing import Any, NoReturn

import httpx

from . import egress
from .frames import Buffer, pack

TOOL_FILE = "<tool>"


class OutputLimit(BaseException):
    """Printed or logged more than the call may: a BaseException, so ``except Exception`` in
    the customer's code does not swallow it."""


class RunContext:
    """What the function learns of its call (CallKaro's ``ctx``)."""

    def __init__(self, ctx: dict[str, Any]) -> None:
        self.call_id: str = ctx["call_id"]
        self.conversation_id: str = ctx["conversation_id"]
        self.agent_id: str = ctx["agent_id"]
        self.context: dict[str, Any] = ctx.get("context") or {}
        self.variables: dict[str, Any] = ctx.get("variables") or {}
        self.secrets: dict[str, str] = ctx.get("secrets") or {}

    def __repr__(self) -> str:  # never the secrets' values, e.g. in a logged f-string
        return f"RunContext(call_id={self.call_id!r}, conversation_id={self.conversation_id!r})"


class Channel:
    """The call's socket to the code-executor: frames out, and replies to its HTTP requests."""

    def __init__(self, sock: socket.socket, max_output: int) -> None:
        self.sock = sock
        self.output_left = max_output
        self._buffer = Buffer()
        self._replies: dict[int, asyncio.Future[tuple[dict[str, Any], bytes]]] = {}
        self._next = 0
        self._listening = False

    def send(self, header: dict[str, Any], body: bytes = b"") -> None:
        self.sock.sendall(pack(header, body))

    def output(self, kind: str, text: str) -> None:
        # A character is a byte or more: a text longer than what is left is over the cap
        # before encode() copies it (100 MB printed would be over the memory limit first).
        long = len(text) > self.output_left
        self.output_left -= len(text) if long else len(text.encode())
        if self.output_left < 0:
            raise OutputLimit("the function printed or logged more than it may")
        self.send({"op": "log", "level": kind, "message": text})

    async def request(self, header: dict[str, Any], body: bytes) -> tuple[dict[str, Any], bytes]:
        loop = asyncio.get_running_loop()
        if not self._listening:
            loop.add_reader(self.sock.fileno(), self._readable)
            self._listening = True
        self._next += 1
        reply: asyncio.Future[tuple[dict[str, Any], bytes]] = loop.create_future()
        self._replies[self._next] = reply
        self.send({**header, "op": "http", "req": self._next}, body)
        return await reply

    def _readable(self) -> None:
        data = self.sock.recv(1 << 16)
        if not data:
            for reply in self._replies.values():
                reply.set_exception(ConnectionError("the sandbox's egress went away"))
            self._replies.clear()
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
            return
        for header, body in self._buffer.feed(data):
            waiting = self._replies.pop(header.get("req", -1), None)
            if waiting is not None and not waiting.done():
                waiting.set_result((header, body))


class Printed:
    """``sys.stdout``/``sys.stderr``: lines become the call's log, up to the output cap."""

    def __init__(self, channel: Channel, kind: str) -> None:
        self.channel = channel
        self.kind = kind

    def write(self, text: str) -> int:
        if text.strip():
            self.channel.output(self.kind, text.rstrip("\n"))
        return len(text)

    def flush(self) -> None:
        pass


def serve(
    sock: socket.socket,
    limits: dict[str, int],
    codes: dict[str, CodeType],
    modules: frozenset[str],
    warm: bool,
) -> NoReturn:
    """Wait for this process's one call, run it and report its outcome; never returns.

    Everything that does not depend on the call (limits, the event loop) is done
    before the call arrives: the zygote keeps a spare process waiting. ``warm``:
    the account's functions make requests, and this one's first request would copy
    a few hundred of the zygote's pages as httpx touches them (about a millisecond
    here); one made now, through a mock transport, copies them before the call.
    """
    channel = Channel(sock, limits["output_bytes"])
    try:
        _contain(limits)
        loop = asyncio.new_event_loop()
        namespace = _namespace(channel, modules)
        if warm:
            loop.run_until_complete(warm_request())
        job = _job(channel)
        sys.stdout = sys.stderr = Printed(channel, "print")
        outcome = _outcome(channel, loop, namespace, job, codes)
    except BaseException as exc:
        outcome = {"error": _failure(exc)}
    try:
        channel.send({"op": "done", **outcome})
    finally:
        os._exit(0)


async def warm_request() -> None:
    """A request through httpx's whole path, answered by a mock transport: no network."""
    transport = httpx.MockTransport(lambda _: httpx.Response(200, json={"warm": True}))
    async with httpx.AsyncClient(transport=transport, timeout=1.0) as client:
        (await client.post("http://warm.invalid/", params={"q": 1}, json={})).json()


def _job(channel: Channel) -> dict[str, Any]:
    buffer = Buffer()
    while True:
        data = channel.sock.recv(1 << 16)
        if not data:
            os._exit(0)  # never used: the code-executor let its spare go
        frames = buffer.feed(data)
        if frames:
            return frames[0][0]


def _contain(limits: dict[str, int]) -> None:
    """Limits of this call alone, below the zygote's own: hard limits cannot be raised again."""
    devnull = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)  # what the code writes past sys.stdout goes nowhere
    os.close(devnull)
    _lower(resource.RLIMIT_AS, limits["memory_bytes"] + _mapped_bytes())
    _lower(resource.RLIMIT_CPU, limits["cpu_s"], limits["cpu_s"] + 1)
    _lower(resource.RLIMIT_NOFILE, limits["open_files"])
    # Counted per user: the zygote and its children run as the sandbox's own uid, so
    # this refuses the call any process or thread of its own.
    _lower(resource.RLIMIT_NPROC, 0)


def _lower(limit: int, soft: int, hard: int | None = None) -> None:
    """Never above what the sandbox as a whole may (raising a hard limit is refused)."""
    ceiling = resource.getrlimit(limit)[1]
    if ceiling != resource.RLIM_INFINITY:
        soft, hard = min(soft, ceiling), min(soft if hard is None else hard, ceiling)
    resource.setrlimit(limit, (soft, soft if hard is None else hard))


def _mapped_bytes() -> int:
    """What the process has mapped already (the interpreter, httpx): the limit is on top."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[0]) * resource.getpagesize()
    except OSError:
        return 0


def _outcome(
    channel: Channel,
    loop: asyncio.AbstractEventLoop,
    namespace: dict[str, Any],
    job: dict[str, Any],
    codes: dict[str, CodeType],
) -> dict[str, Any]:
    code = codes.get(job["code"]) or compile(job["code"], TOOL_FILE, "exec")
    exec(code, namespace)
    function = namespace[job["function"]]
    result = loop.run_until_complete(function(RunContext(job["ctx"]), **job["arguments"]))
    return {"result": _checked(result, channel.output_left)}


def _checked(result: Any, max_bytes: int) -> Any:
    if not isinstance(result, dict) or result.get("status") not in ("success", "error"):
        raise InvalidResult('the function must return a dict with "status": "success" or "error"')
    try:
        size = len(json.dumps(result))
    except (TypeError, ValueError) as exc:
        raise InvalidResult(f"the function returned something that is not JSON: {exc}") from None
    if size > max_bytes:
        raise OutputLimit(f"the function returned {size} bytes, more than {max_bytes}")
    return result


class InvalidResult(Exception):
    pass


def _namespace(channel: Channel, modules: frozenset[str]) -> dict[str, Any]:
    import logging

    logger = logging.getLogger("tool")
    logger.handlers = [_LogHandler(channel)]
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    guarded = dict(vars(builtins))
    guarded["__import__"] = _importer(modules)
    egress.install(channel)
    import datetime
    import math
    import re

    return {
        "__name__": "__tool__",
        "__builtins__": guarded,
        "RunContext": RunContext,
        "httpx": httpx,
        "logger": logger,
        "json": json,
        "datetime": datetime,
        "re": re,
        "math": math,
    }


def _importer(modules: frozenset[str]) -> Any:
    real = builtins.__import__
    allowed = ", ".join(sorted(modules))

    def guarded(
        name: str, globals: Any = None, locals: Any = None, fromlist: Any = (), level: int = 0
    ) -> Any:
        if level != 0 or name.partition(".")[0] not in modules:
            raise ImportError(f"module '{name}' is not available to a tool (allowed: {allowed})")
        return real(name, globals, locals, fromlist, level)

    return guarded


class _LogHandler:
    def __new__(cls, channel: Channel) -> Any:
        import logging

        class Handler(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                channel.output(record.levelname.lower(), self.format(record))

            def handleError(self, record: logging.LogRecord) -> None:
                raise  # an OutputLimit must reach the call, not be printed to stderr

        return Handler()


def _failure(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, MemoryError):
        return {"kind": "memory", "message": "the function used too much memory"}
    if isinstance(exc, OutputLimit):
        return {"kind": "output", "message": str(exc)}
    if isinstance(exc, InvalidResult):
        return {"kind": "invalid_result", "message": str(exc)}
    return {"kind": "exception", "message": _described(exc)}


def _described(exc: BaseException) -> str:
    """``Type: message (line N)``, the line in the customer's code: never our frames."""
    lines = [
        frame.lineno
        for frame in traceback.extract_tb(exc.__traceback__)
        if frame.filename == TOOL_FILE
    ]
    where = f" (line {lines[-1]})" if lines else ""
    text = str(exc)
    return f"{type(exc).__name__}: {text[:500]}{where}" if text else f"{type(exc).__name__}{where}"
