"""httpx's default transport against httpx-aiohttp's, for the executor's choice.

A 500-byte JSON POST to an aiohttp server on loopback (run in a child process
so server and client do not share a core's event loop), sequential and with
16 and 64 requests in flight. Run: python -m bench.http_transport
"""

import asyncio
import multiprocessing
import socket
import time
from collections.abc import Callable

import httpx
from aiohttp import web
from httpx_aiohttp import AiohttpTransport

from bench.stats import summary

BODY = b'{"payload": "' + b"x" * 480 + b'"}'
REQUESTS = 2000


def _serve(port: int) -> None:
    async def echo(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/", echo)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _measure(client: httpx.AsyncClient, url: str, in_flight: int) -> tuple[float, str]:
    latencies: list[float] = []
    gate = asyncio.Semaphore(in_flight)

    async def one() -> None:
        async with gate:
            started = time.perf_counter()
            response = await client.post(
                url, content=BODY, headers={"Content-Type": "application/json"}
            )
            response.raise_for_status()
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(REQUESTS)))
    return REQUESTS / (time.perf_counter() - started), summary(latencies)


async def _bench(url: str) -> None:
    limits = httpx.Limits(max_connections=128, max_keepalive_connections=64)
    transports: dict[str, Callable[[], httpx.AsyncBaseTransport]] = {
        "httpx default": lambda: httpx.AsyncHTTPTransport(limits=limits),
        "httpx-aiohttp": lambda: AiohttpTransport(limits=limits),
    }
    for name, transport in transports.items():
        async with httpx.AsyncClient(transport=transport()) as client:
            await _measure(client, url, 8)  # warm the pool
            for in_flight in (1, 16, 64):
                rate, latency = await _measure(client, url, in_flight)
                print(f"{name:14} {in_flight:3} in flight: {rate:7.0f} req/s, {latency}")


def main() -> None:
    port = _free_port()
    server = multiprocessing.Process(target=_serve, args=(port,), daemon=True)
    server.start()
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.05)
        asyncio.run(_bench(f"http://127.0.0.1:{port}/"))
    finally:
        server.terminate()


if __name__ == "__main__":
    main()
