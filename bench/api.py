"""The customer's API for the benchmark: loopback aiohttp, in a process of its own.

Its own process so that serving requests never shares an event loop (or a
core's time slice accounting) with the client being measured. ``/slots``
answers at once, like the salon's availability; ``/delayed?delay_s=2``
answers the same after a pause, to hold thousands of calls in flight;
``/jittered`` answers in 5-200 ms and ``/executions`` says when each call (by
its arguments' ``turn``) reached it and with which ``Idempotency-Key``, for the
fault tests. Two long-running APIs report through Midcall's callbacks:
``/later`` answers 202, then reports one progress and completes; ``/held``
reports one progress and holds the request until its ``on_cancel``
(``/held/cancel``) is told, and ``/held/told`` counts the calls told.
Run by ``ApiProcess``; by hand: python -m bench.api PORT
"""

import asyncio
import contextlib
import random
import socket
import subprocess
import sys
import time
from collections import defaultdict

from aiohttp import ClientSession, web

from bench.procstats import raise_fd_limit
from shared.fabric.nats_server import free_port
from shared.process.processes import die_with_parent
from shared.security.callback_tokens import TOKEN_HEADER, URL_HEADER

SLOTS = ["10:00 AM", "11:30 AM", "2:00 PM", "4:15 PM"]
DEFAULT_DELAY_S = 2.0
# The kernel caps this at net.core.somaxconn; 10,000 connects at once overflow 128.
BACKLOG = 16384
STARTUP_TIMEOUT_S = 10.0


async def _slots(request: web.Request) -> web.Response:
    asked = await request.json()
    return web.json_response(
        {"date": asked.get("date"), "service": asked.get("service"), "slots": SLOTS}
    )


async def _delayed(request: web.Request) -> web.Response:
    await asyncio.sleep(float(request.query.get("delay_s", DEFAULT_DELAY_S)))
    return await _slots(request)


PROGRESS = {"message": "Still checking the diary.", "speak": False}
# A held request never told of its cancel answers after this, as an API would time out.
HELD_S = 60.0


class Callbacks:
    """The long-running APIs: each reports to the Midcall-Callback-Url its request carried."""

    def __init__(self) -> None:
        self.session: ClientSession | None = None
        self.holding: dict[str, asyncio.Event] = {}  # by Idempotency-Key: the call's id
        self.told = 0
        self.reporting: set[asyncio.Task[None]] = set()

    async def later(self, request: web.Request) -> web.Response:
        """202 at once; then one progress, and the completion with the slots."""
        answer = {"slots": SLOTS}
        task = asyncio.create_task(self._report(request, complete=answer))
        self.reporting.add(task)
        task.add_done_callback(self.reporting.discard)
        return web.json_response({"accepted": True}, status=202)

    async def held(self, request: web.Request) -> web.Response:
        """One progress, then the request is held until its cancel is told."""
        told = self.holding[request.headers["Idempotency-Key"]] = asyncio.Event()
        await self._report(request)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(told.wait(), HELD_S)
        return await _slots(request)

    async def cancel(self, request: web.Request) -> web.Response:
        told = self.holding.pop(request.headers.get("Idempotency-Key", ""), None)
        if told is not None:
            self.told += 1
            told.set()
        return web.json_response({})

    async def count(self, _: web.Request) -> web.Response:
        return web.json_response({"told": self.told})

    async def close(self, _: web.Application) -> None:
        if self.session is not None:
            await self.session.close()

    async def _report(self, request: web.Request, complete: object | None = None) -> None:
        """One progress; then, where given, the completion."""
        if self.session is None:
            self.session = ClientSession()
        url, token = request.headers[URL_HEADER], {TOKEN_HEADER: request.headers[TOKEN_HEADER]}
        async with self.session.post(f"{url}/progress", json=PROGRESS, headers=token) as sent:
            sent.raise_for_status()
        if complete is not None:
            async with self.session.post(f"{url}/complete", json=complete, headers=token) as sent:
                sent.raise_for_status()


def build_app() -> web.Application:
    app = web.Application()
    app.router.add_post("/slots", _slots)
    app.router.add_post("/delayed", _delayed)
    # By the call's turn (its arguments'): when it reached the API, with which key.
    executions: defaultdict[str, list[tuple[float, str]]] = defaultdict(list)

    async def jittered(request: web.Request) -> web.Response:
        # The fault test's API: 5-200 ms, noting each time a call reached it.
        asked = await request.json()
        key = request.headers.get("Idempotency-Key", "")
        executions[str(asked.get("turn"))].append((time.time(), key))
        await asyncio.sleep(random.uniform(0.005, 0.2))
        return await _slots(request)

    async def counted(_: web.Request) -> web.Response:
        return web.json_response(dict(executions))

    app.router.add_post("/jittered", jittered)
    app.router.add_get("/executions", counted)
    callbacks = Callbacks()
    app.router.add_post("/later", callbacks.later)
    app.router.add_post("/held", callbacks.held)
    app.router.add_post("/held/cancel", callbacks.cancel)
    app.router.add_get("/held/told", callbacks.count)
    app.on_cleanup.append(callbacks.close)
    return app


def serve(port: int) -> None:
    raise_fd_limit()
    web.run_app(
        build_app(), host="127.0.0.1", port=port, backlog=BACKLOG, print=None, access_log=None
    )


class ApiProcess:
    """The API's child process: ``url`` once it accepts connections, ``pid`` to measure it."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self._process is not None, "not started"
        return self._process.pid

    def start(self) -> str:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "bench.api", str(self.port)], preexec_fn=die_with_parent
        )
        give_up = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < give_up:
            if self._process.poll() is not None:
                raise RuntimeError(f"bench API exited with code {self._process.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.1).close()
                return self.url
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("bench API did not listen in time")

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            self._process.wait(timeout=10)


if __name__ == "__main__":
    serve(int(sys.argv[1]))
