"""The one outbound HTTP client per process, and a send that honours our limits.

Requests go out through aiohttp directly: under load the executor's HTTP
client was its biggest cost, and httpx on top of aiohttp's pool (see
bench/http_transport.py) roughly doubled it. Redirects are not followed (a
redirect could lead to an address the destination policy would refuse), and
no cookie is kept: one session serves every customer's tools.
"""

import asyncio
import resource
from dataclasses import dataclass

import aiohttp
from aiohttp.typedefs import LooseHeaders
from multidict import CIMultiDict
from yarl import URL

from shared.calls.render import RenderedRequest, full_url
from shared.contract.events import HttpResponse
from shared.security.destinations import DestinationPolicy, GuardedResolver
from shared.settings import Settings

# File descriptors kept for everything but outbound connections (NATS, logs, the loop).
RESERVED_FDS = 256
READ_CHUNK = 64 * 1024
# Connection failures, as aiohttp reports them (a refused, reset or unresolvable host).
TransportError = aiohttp.ClientError
# The ones that happen before any byte of the request is sent: safe to send again.
NotConnected = aiohttp.ClientConnectorError


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


@dataclass(frozen=True)
class Answer:
    """What came back: the body decompressed, empty when it was over the cap (``truncated``)."""

    status: int
    headers: CIMultiDict[str]
    body: bytes
    truncated: bool


class Sender:
    """Sends one rendered request; the caller's ``asyncio.timeout`` bounds it as a whole."""

    def __init__(
        self, max_connections: int, policy: DestinationPolicy, max_response_bytes: int
    ) -> None:
        self.max_connections = max_connections
        self.policy = policy
        self.max_response_bytes = max_response_bytes
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # Built on first use, inside the running loop, as aiohttp requires.
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self.max_connections,
                limit_per_host=0,
                resolver=GuardedResolver(self.policy),
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=aiohttp.ClientTimeout(total=None),
                auto_decompress=True,
            )
        return self._session

    async def send(self, request: RenderedRequest, timeout_s: float) -> HttpResponse:
        answer = await self.exchange(
            request.method, full_url(request), request.headers, request.body, timeout_s
        )
        return HttpResponse(
            status=answer.status,
            body="" if answer.truncated else answer.body.decode("utf-8", errors="replace"),
            truncated=answer.truncated,
            content_type=answer.headers.get("Content-Type"),
            retry_after=answer.headers.get("Retry-After"),
        )

    async def exchange(
        self,
        method: str,
        url: URL,
        headers: LooseHeaders,
        body: bytes | None,
        timeout_s: float,
    ) -> Answer:
        """One request as given, redirects not followed, the body read up to the cap."""
        async with (
            asyncio.timeout(timeout_s),
            self._client().request(
                method, url, headers=headers, data=body, allow_redirects=False
            ) as response,
        ):
            content, truncated = await self._read_capped(response)
        return Answer(response.status, response.headers.copy(), content, truncated)

    async def _read_capped(self, response: aiohttp.ClientResponse) -> tuple[bytes, bool]:
        # Never hold more than the cap in memory, whatever the API sends.
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.content.iter_chunked(READ_CHUNK):
            chunks.append(chunk)
            size += len(chunk)
            if size > self.max_response_bytes:
                return b"", True
        return b"".join(chunks), False

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def sender_for(settings: Settings, max_payload: int) -> tuple[Sender, DestinationPolicy]:
    """An executor's outbound client and the policy it holds to, from its settings."""
    # A response must fit in one NATS message with its envelope.
    cap = min(settings.max_response_bytes, max_payload - 64 * 1024)
    policy = DestinationPolicy(settings.allow_destinations)
    return Sender(connection_limit(settings.max_connections), policy, cap), policy
