"""Which hosts a tool may call: public addresses, plus what the operator allows.

Loopback, private, link-local and other non-global addresses are refused
(server-side request forgery) unless ``MIDCALL_ALLOW_DESTINATIONS`` names the
host or a network containing it.
"""

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from shared.errors import CallRejected, ErrorCode

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


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

    async def check(self, url: str) -> None:
        host = (urlsplit(url).hostname or "").lower()
        if host in self.hosts:
            return
        for address in await _addresses(host):
            if not self.permits(address):
                raise CallRejected(
                    ErrorCode.BLOCKED_DESTINATION,
                    "This tool points at an address it is not allowed to call. Tell the caller "
                    "the action is not available right now.",
                    {"host": host, "address": str(address)},
                )


async def _addresses(host: str) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise CallRejected(
            ErrorCode.CONNECTION_ERROR,
            "The service for this action could not be found. Tell the caller "
            "there is a technical problem and offer to try again later.",
            {"host": host},
        ) from exc
    return [ipaddress.ip_address(info[4][0]) for info in infos]
