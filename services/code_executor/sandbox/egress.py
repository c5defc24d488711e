"""The function's ``httpx``, sending through Midcall's egress instead of the network.

The sandbox has no network at all: every request a function makes with
``httpx.AsyncClient`` becomes a frame to the code-executor, which applies the
destination policy and the response cap, sends it, and frames the answer
back. Refusals arrive as httpx's own errors, so ``except httpx.RequestError``
in the customer's code handles them as it would a network failure.
"""

from typing import Any

import httpx

_channel: Any = None
ERRORS = {
    "timeout": httpx.ReadTimeout,
    "too_large": httpx.ReadError,
    "blocked": httpx.ConnectError,
    "connect": httpx.ConnectError,
    "invalid": httpx.LocalProtocolError,  # what httpx raises for a request it cannot send
}


class EgressTransport(httpx.AsyncBaseTransport):
    """Takes (and ignores) what ``AsyncHTTPTransport`` does: connections are the egress's."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        timeout = request.extensions.get("timeout", {}).get("read")
        header, content = await _channel.request(
            {
                "method": request.method,
                "url": str(request.url),
                "headers": [
                    [k.decode("latin-1"), v.decode("latin-1")] for k, v in request.headers.raw
                ],
                "timeout_s": timeout,
            },
            body,
        )
        if "error" in header:
            raise ERRORS.get(header["error"], httpx.ConnectError)(
                header["message"], request=request
            )
        return httpx.Response(
            header["status"], headers=header["headers"], content=content, request=request
        )


class BlockingTransport(httpx.BaseTransport):
    """A blocking request would stall the call's event loop: only the async client goes out."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(
            "a tool's requests go through httpx.AsyncClient: a blocking client would stall it",
            request=request,
        )


def install(channel: Any) -> None:
    """Route this process's httpx clients through ``channel``."""
    global _channel
    _channel = channel
    # Where httpx's clients look their default transports up when they are made.
    for module in (httpx, httpx._client):
        vars(module)["AsyncHTTPTransport"] = EgressTransport
        vars(module)["HTTPTransport"] = BlockingTransport
