"""A real HTTP API on loopback that records exactly what it received."""

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    query: list[tuple[str, str]]
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class RecordingApi:
    """Routes are (method, path) -> handler; every request is recorded first."""

    routes: dict[tuple[str, str], Handler] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    url: str = ""
    _runner: web.AppRunner | None = None
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    def route(self, method: str, path: str, handler: Handler) -> None:
        self.routes[(method, path)] = handler

    def reply(
        self,
        method: str,
        path: str,
        status: int = 200,
        json: object = None,
        text: str | None = None,
        delay_s: float = 0.0,
    ) -> None:
        async def handler(_: web.Request) -> web.StreamResponse:
            if delay_s:
                await asyncio.sleep(delay_s)
            if text is not None:
                return web.Response(status=status, text=text, content_type="text/plain")
            return web.json_response(json, status=status)

        self.route(method, path, handler)

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.received.append(
            Received(
                request.method,
                request.path,
                list(request.query.items()),
                [(k.decode(), v.decode()) for k, v in request.raw_headers],
                body,
            )
        )
        async with self._arrived:
            self._arrived.notify_all()
        handler = self.routes.get((request.method, request.path))
        if handler is None:
            return web.json_response({"error": "no such route"}, status=404)
        return await handler(request)

    async def wait_for(self, count: int, timeout_s: float = 10.0) -> list[Received]:
        async with asyncio.timeout(timeout_s), self._arrived:
            await self._arrived.wait_for(lambda: len(self.received) >= count)
        return self.received

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        # Do not wait out a handler still sleeping (a timeout test's slow API).
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
