"""Running one service process: start, wait for SIGINT/SIGTERM, stop cleanly.

Each service's composition root builds a ``Runnable``; this module owns the
process life cycle so that every service shuts down the same way: stop taking
HTTP requests, drain the NATS connection (in-flight handlers finish, nothing
new is fetched), then exit.
"""

import asyncio
import contextlib
import logging
import signal
from collections.abc import Generator
from typing import Protocol

import uvicorn
from fastapi import FastAPI
from faststream.nats import NatsBroker

from shared import subjects

log = logging.getLogger("midcall.service")


class Runnable(Protocol):
    name: str
    broker: NatsBroker

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling: the process runner owns signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class HttpServer:
    """An ASGI app served in the service's own event loop."""

    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        config = uvicorn.Config(
            app, host=host, port=port, log_level="warning", access_log=False, lifespan="off"
        )
        self._server = _QuietServer(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises why it could not start (e.g. port in use)
                raise RuntimeError("HTTP server stopped before it started")
            await asyncio.sleep(0.01)

    @property
    def port(self) -> int:
        servers = self._server.servers
        return int(servers[0].sockets[0].getsockname()[1]) if servers else 0

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await self._task


async def run_until_signal(service: Runnable) -> None:
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    await service.start()
    await service.broker.publish(service.name, subjects.ready(service.name))
    log.info("%s started", service.name)
    await stopping.wait()
    log.info("%s stopping", service.name)
    for sig in (signal.SIGINT, signal.SIGTERM):
        # Ctrl-C reaches us and `midcall up` sends SIGTERM too: once stopping, further
        # signals are ignored rather than hitting a closing event loop.
        loop.remove_signal_handler(sig)
        signal.signal(sig, signal.SIG_IGN)
    await service.stop()
