"""Serving a REST API in a service's own event loop (registry and billing only).

Apart from ``shared.process.service`` so that the services without an API never import
uvicorn or FastAPI: each process loads only what it uses.
"""

import asyncio
import contextlib
from collections.abc import Generator

import uvicorn
from fastapi import FastAPI
from prometheus_client import make_asgi_app


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling (the process runner owns signals), and
    stopped at once: uvicorn looks for a stop every 0.1 s, here it is woken for one."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.stopping = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    async def main_loop(self) -> None:
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + 1) % 864000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), 0.1)
            # Each tick keeps the Date header current, as uvicorn's own loop does.
            should_exit = await self.on_tick(counter)


class HttpServer:
    """An ASGI app served in the service's own event loop."""

    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        app.mount("/metrics", make_asgi_app())
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
        self._server.stopping.set()
        if self._task is not None:
            await self._task
