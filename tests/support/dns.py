"""A hostile DNS answer: every name resolves to one address, for the executor's resolver."""

import socket

import pytest
from aiohttp.abc import ResolveResult
from aiohttp.resolver import ThreadedResolver


def resolving_to(
    monkeypatch: pytest.MonkeyPatch, address: str, family: int = socket.AF_INET
) -> None:
    """Make every name resolve to ``address`` (of ``family``)."""

    async def resolve(
        self: ThreadedResolver, host: str, port: int = 0, family_asked: int = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=family,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
        ]

    monkeypatch.setattr(ThreadedResolver, "resolve", resolve)
