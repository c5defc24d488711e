"""Which hosts a tool may call: public addresses, plus what the operator allows.

Loopback, private, link-local and other non-global addresses are refused
(server-side request forgery) unless ``MIDCALL_ALLOW_DESTINATIONS`` names the
host or a network containing it. IP literals are checked before the request;
host names are checked by the connection's own resolver, on the very addresses
it then connects to, so a name that re-resolves elsewhere (DNS rebinding)
cannot slip through.
"""

import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from shared.errors import CallRejected, ErrorCode

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class BlockedDestination(OSError):
    """A host name that resolved only to addresses tools may not call."""

    def __init__(self, host: str, address: str) -> None:
        super().__init__(f"{host} resolves to {address}, which tools may not call")
        self.host = host
        self.address = address


class DestinationPolicy:
    def __init__(self, allow: str = "") -> None:
        entries = [entry.strip().lower() for entry in allow.split(",") if entry.strip()]
        self.networks: list[Network] = []
        self.hosts: set[str] = set()
        for entry in entries:
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self.hosts.add(entry)

    def permits(self, address: IPAddress) -> bool:
        return address.is_global or any(address in network for network in self.networks)

    def check_literal(self, url: str) -> None:
        """Refuse a URL whose host is a literal address tools may not call."""
        host = (urlsplit(url).hostname or "").lower()
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return  # a name: the resolver checks it
        if host not in self.hosts and not self.permits(address):
            raise blocked(host, str(address))


def blocked(host: str, address: str) -> CallRejected:
    return CallRejected(
        ErrorCode.BLOCKED_DESTINATION,
        "This tool points at an address it is not allowed to call. Tell the caller "
        "the action is not available right now.",
        {"host": host, "address": address},
    )


class GuardedResolver(AbstractResolver):
    """Resolves as usual, then keeps only the addresses the policy permits."""

    def __init__(self, policy: DestinationPolicy) -> None:
        self._policy = policy
        self._inner = ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if host.lower() in self._policy.hosts:
            return results
        allowed = [r for r in results if self._policy.permits(_address(r))]
        if not allowed:
            raise BlockedDestination(host, results[0]["host"] if results else "")
        return allowed

    async def close(self) -> None:
        await self._inner.close()


def _address(result: ResolveResult) -> IPAddress:
    return ipaddress.ip_address(result["host"])


def blocked_cause(exc: BaseException) -> BlockedDestination | None:
    """The BlockedDestination behind a transport error, however the layers wrapped it."""
    seen: set[int] = set()
    current: Any = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, BlockedDestination):
            return current
        seen.add(id(current))
        current = getattr(current, "os_error", None) or current.__cause__ or current.__context__
    return None
