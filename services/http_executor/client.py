"""The one outbound HTTP client per process, and a send that honours our limits.

httpx's own transport degrades badly with many requests in flight (see
bench/http_transport.py), so requests go through aiohttp's connection pool
behind httpx's API. Redirects are not followed: a redirect could lead to an
address the destination policy would refuse.
"""

import asyncio
import resource

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from services.http_executor.destinations import DestinationPolicy, GuardedResolver
from services.http_executor.render import RenderedRequest
from shared.events import HttpResponse

# File descriptors kept for everything but outbound connections (NATS, logs, the loop).
RESERVED_FDS = 256


def connection_limit(configured: int) -> int:
    """The outbound connection pool's size: as configured, or as many as descriptors allow.

    Calls mostly wait on APIs, so a burst of 10,000 needs about 10,000
    connections at once; the soft descriptor limit is raised to the hard one
    first (many systems start processes at a soft 1,024).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    available = max(1, soft - RESERVED_FDS) if soft != resource.RLIM_INFINITY else 1 << 16
    return min(configured, available) if configured else available


def build_client(max_connections: int, policy: DestinationPolicy) -> httpx.AsyncClient:
    def session() -> aiohttp.ClientSession:
        # Built on first use, inside the running loop, as aiohttp requires.
        connector = aiohttp.TCPConnector(
            limit=max_connections, limit_per_host=0, resolver=GuardedResolver(policy)
        )
        return aiohttp.ClientSession(connector=connector)

    return httpx.AsyncClient(
        transport=AiohttpTransport(client=session), follow_redirects=False, timeout=None
    )


def full_url(request: RenderedRequest) -> httpx.URL:
    """The URL with the rendered query appended to any it already has.

    (httpx's ``params=`` would replace the URL's own query string.)
    """
    url = httpx.URL(request.url)
    if not request.params:
        return url
    merged = httpx.QueryParams([*url.params.multi_items(), *request.params])
    return url.copy_with(query=str(merged).encode())


class Sender:
    """Sends one rendered request; the caller's ``asyncio.timeout`` bounds it as a whole."""

    def __init__(self, client: httpx.AsyncClient, max_response_bytes: int) -> None:
        self.client = client
        self.max_response_bytes = max_response_bytes

    async def send(self, request: RenderedRequest, timeout_s: float) -> HttpResponse:
        async with (
            asyncio.timeout(timeout_s),
            self.client.stream(
                request.method, full_url(request), headers=request.headers, content=request.body
            ) as response,
        ):
            body, truncated = await self._read_capped(response)
        return HttpResponse(
            status=response.status_code,
            body=body,
            truncated=truncated,
            content_type=response.headers.get("content-type"),
        )

    async def _read_capped(self, response: httpx.Response) -> tuple[str, bool]:
        # Never hold more than the cap in memory, whatever the API sends.
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            chunks.append(chunk)
            size += len(chunk)
            if size > self.max_response_bytes:
                return "", True
        return b"".join(chunks).decode("utf-8", errors="replace"), False

    async def close(self) -> None:
        await self.client.aclose()
