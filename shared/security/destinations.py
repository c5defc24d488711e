"""Which hosts a tool may call: public addresses, plus what the operator allows.

Loopback, private, link-local and other non-global addresses are refused
(server-side request forgery) unless ``MIDCALL_ALLOW_DESTINATIONS`` names the
host or a network containing it. IP literals are checked before the request;
host names are checked by the connection's own resolver, on the very addresses
it then connects to, so a name that re-resolves elsewhere (DNS rebinding)
cannot slip through.

IPv6 forms that carry an IPv4 address (IPv4-mapped and -translated, the
IPv4-compatible ``::a.b.c.d``, 6to4, NAT64's well-known prefix) are judged by
the IPv4 address inside, since that is where the packets end up:
``64:ff9b::a00:1`` reaches 10.0.0.1 through a NAT64 gateway. Forms whose IPv4
end cannot be told from the address (Teredo, NAT64's local-use prefix) are
refused outright.
"""

import ipaddress
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from shared.contract.errors import CallRejected, ErrorCode

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class BlockedDestination(OSError):
    """A host name that resolved only to addresses tools may not call."""

    def __init__(self, host: str, address: str) -> None:
        inside = ", ".join(explain(address).values())  # e.g. "6to4 2002::/16, 10.0.0.1"
        shown = f"{address} ({inside})" if inside else address
        super().__init__(f"{host} resolves to {shown}, which tools may not call")
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
        # The allow-list matches the address as written: allowing 10.0.0.0/8 does
        # not allow 64:ff9b::a00:1, whose route to 10.0.0.1 runs through a gateway.
        return any(address in network for network in self.networks) or judge(address).public

    def check_literal(self, url: str, secret_host: str | None = None) -> None:
        """Refuse a URL whose host is a literal address tools may not call.

        ``secret_host``: the host's template, where a secret is rendered into it.
        """
        host = (urlsplit(url).hostname or "").lower()
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return  # a name: the resolver checks it
        if host not in self.hosts and not self.permits(address):
            raise blocked(host, str(address), secret_host)


def blocked(host: str, address: str, secret_host: str | None = None) -> CallRejected:
    """The refusal of ``host``; where a secret is rendered into it, its template
    (``secret_host``) is named instead, and nothing of the address, which is the
    secret itself (a literal) or was found by it."""
    # The connect-time refusal reaches the executor as a bare address string through
    # aiohttp's exception chain, so the explanation is derived from the address here:
    # literal and resolved addresses are reported alike.
    return CallRejected(
        ErrorCode.BLOCKED_DESTINATION,
        "This tool points at an address it is not allowed to call. Tell the caller "
        "the action is not available right now.",
        {"host": secret_host}
        if secret_host
        else {"host": host, "address": address, **explain(address)},
    )


@dataclass(frozen=True)
class Judgement:
    """Whether an address is public, and for an IPv6 form wrapping IPv4, what decided it."""

    public: bool
    form: str = ""  # the wrapping form, e.g. "NAT64 64:ff9b::/96"; empty for a plain address
    embedded_ipv4: ipaddress.IPv4Address | None = None  # the address judged in its place
    reason: str = ""  # why a form was refused without judging what it carries

    def details(self) -> dict[str, str]:
        """What a refusal reports beyond host and address; nothing for a plain address."""
        if not self.form:
            return {}
        found = {"form": self.form}
        if self.embedded_ipv4 is not None:
            found["embedded_ipv4"] = str(self.embedded_ipv4)
        if self.reason:
            found["reason"] = self.reason
        return found


# Prefixes whose last 32 bits are the IPv4 destination (ipaddress has no property for them).
_LAST_32_BITS_FORMS = (
    ("NAT64 64:ff9b::/96", ipaddress.IPv6Network("64:ff9b::/96")),  # RFC 6052
    ("IPv4-translated ::ffff:0:0:0/96", ipaddress.IPv6Network("::ffff:0:0:0/96")),  # RFC 2765
    ("IPv4-compatible ::/96", ipaddress.IPv6Network("::/96")),  # RFC 4291, deprecated
)
# RFC 8215: each network picks its own prefix length inside it, so which bits hold the
# IPv4 address, and where it leads, is known only to that network's translator.
_NAT64_LOCAL_USE = ipaddress.IPv6Network("64:ff9b:1::/48")


def judge(address: IPAddress) -> Judgement:
    """Whether tools may call ``address``: an IPv6 form wrapping IPv4 by the IPv4 inside."""
    if isinstance(address, ipaddress.IPv6Address):
        wrapped = _judge_wrapped(address)
        if wrapped is not None:
            return wrapped
    return Judgement(_public(address))


def _public(address: IPAddress) -> bool:
    # Python 3.11 counts IPv4 multicast (224.0.0.0/4) as global; no tool calls a group.
    return address.is_global and not address.is_multicast


def explain(address: str) -> dict[str, str]:
    """The refusal details ``judge`` gives for an address string ({} for a plain one)."""
    try:
        return judge(ipaddress.ip_address(address)).details()
    except ValueError:
        return {}


def _judge_wrapped(address: ipaddress.IPv6Address) -> Judgement | None:
    """The judgement of an IPv6 form that wraps IPv4, or None for a native address."""
    if address.ipv4_mapped is not None:
        return _by_embedded("IPv4-mapped ::ffff:0:0/96", address.ipv4_mapped)
    if address.teredo is not None:
        # The server is only a relay; the client half is whatever NAT mapping the
        # tunnel's peer got, so the address says nothing reliable about the far end.
        return _refused("Teredo 2001::/32", "a Teredo tunnel's far end cannot be judged")
    if address.sixtofour is not None:
        return _by_embedded("6to4 2002::/16", address.sixtofour)
    if address in _NAT64_LOCAL_USE:
        return _refused(
            "NAT64 local-use 64:ff9b:1::/48",
            "local-use NAT64 translates to an IPv4 address only its network knows",
        )
    # :: and ::1 sit inside ::/96 but are the unspecified and loopback addresses,
    # not IPv4-compatible ones: judge them natively.
    if address.is_unspecified or address.is_loopback:
        return None
    for form, network in _LAST_32_BITS_FORMS:
        if address in network:
            return _by_embedded(form, ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return None


def _by_embedded(form: str, embedded: ipaddress.IPv4Address) -> Judgement:
    # The same rule as for a plain IPv4 literal: packets end up at the embedded address.
    return Judgement(_public(embedded), form, embedded)


def _refused(form: str, reason: str) -> Judgement:
    return Judgement(False, form, reason=reason)


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
