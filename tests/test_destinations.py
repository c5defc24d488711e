"""Which addresses tools may call: literals before the request, names in the resolver."""

import ipaddress
import socket
from collections.abc import Callable

import pytest

from services.http_executor.execute import Executor
from shared.calls.client import Sender
from shared.contract.errors import CallRejected, ErrorCode
from shared.security.destinations import (
    BlockedDestination,
    DestinationPolicy,
    GuardedResolver,
)
from tests.factories import work_item
from tests.support.dns import resolving_to


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x",
        "http://10.1.2.3/",
        "http://[::1]:8080/",
        "http://169.254.169.254/latest/meta-data",
        "http://192.168.0.10/",
        "http://100.64.0.1/",
        "http://224.0.0.1/",  # multicast, which Python 3.11 counts as global
        "http://[ff02::1]/",
        "http://[64:ff9b::e000:1]/",  # multicast inside NAT64
    ],
)
def test_loopback_private_and_link_local_literals_are_blocked(url: str) -> None:
    with pytest.raises(CallRejected) as rejected:
        DestinationPolicy("").check_literal(url)
    assert rejected.value.code == ErrorCode.BLOCKED_DESTINATION


def test_public_literals_and_names_pass_the_literal_check() -> None:
    DestinationPolicy("").check_literal("https://8.8.8.8/resolve")
    DestinationPolicy("").check_literal("http://localhost/")  # a name: the resolver decides


@pytest.mark.parametrize("allow", ["10.0.0.0/8", "10.1.2.3", "internal.example, 10.1.2.0/24"])
def test_operators_can_allow_networks(allow: str) -> None:
    DestinationPolicy(allow).check_literal("http://10.1.2.3/x")


async def test_the_resolver_refuses_names_that_resolve_only_to_blocked_addresses() -> None:
    resolver = GuardedResolver(DestinationPolicy(""))

    with pytest.raises(BlockedDestination) as refused:
        await resolver.resolve("localhost", 80)
    assert (refused.value.host, refused.value.address) == ("localhost", "127.0.0.1")


async def test_the_resolver_keeps_only_permitted_addresses() -> None:
    resolver = GuardedResolver(DestinationPolicy("127.0.0.0/8"))

    results = await resolver.resolve("localhost", 80)

    assert [r["host"] for r in results] == ["127.0.0.1"]


async def test_allowed_names_resolve_unfiltered() -> None:
    resolver = GuardedResolver(DestinationPolicy("localhost"))

    assert [r["host"] for r in await resolver.resolve("localhost", 80)] == ["127.0.0.1"]


async def test_a_blocked_name_fails_the_call_before_any_connection() -> None:
    policy = DestinationPolicy("")
    run = Executor(Sender(4, policy, 1024), policy, {})

    outcome = await run.run(work_item({"url": "http://localhost:9/book"}))

    assert outcome.failure is not None
    assert (outcome.failure.code, outcome.failure.details) == (
        "blocked_destination",
        {"host": "localhost", "address": "127.0.0.1"},
    )
    await run.sender.close()


# IPv6 forms that carry an IPv4 address, each built around the IPv4 address given.
Wrap = Callable[[str], ipaddress.IPv6Address]


def _bits(v4: str) -> int:
    return int(ipaddress.IPv4Address(v4))


def _teredo(client: str) -> ipaddress.IPv6Address:
    # 2001:0::/32, then the server (a public relay), flags and port, then the client
    # address with every bit flipped.
    server = _bits("65.54.227.120")
    return ipaddress.IPv6Address((0x20010000 << 96) | (server << 64) | (_bits(client) ^ 0xFFFFFFFF))


# Forms whose IPv4 address is judged like a plain IPv4 literal.
JUDGED: dict[str, Wrap] = {
    "NAT64 64:ff9b::/96": lambda v4: ipaddress.IPv6Address(f"64:ff9b::{v4}"),
    "6to4 2002::/16": lambda v4: ipaddress.IPv6Address((0x2002 << 112) | (_bits(v4) << 80) | 1),
    "IPv4-compatible ::/96": lambda v4: ipaddress.IPv6Address(f"::{v4}"),
    "IPv4-mapped ::ffff:0:0/96": lambda v4: ipaddress.IPv6Address(f"::ffff:{v4}"),
    "IPv4-translated ::ffff:0:0:0/96": lambda v4: ipaddress.IPv6Address(f"::ffff:0:{v4}"),
}
# Forms refused whatever they carry: where they lead cannot be told from the address.
UNJUDGEABLE: dict[str, Wrap] = {
    "NAT64 local-use 64:ff9b:1::/48": lambda v4: ipaddress.IPv6Address(f"64:ff9b:1::{v4}"),
    "Teredo 2001::/32": _teredo,
}
PRIVATE_V4 = ["10.0.0.1", "127.0.0.1", "169.254.169.254", "192.168.1.1"]
PUBLIC_V4 = ["8.8.8.8", "1.1.1.1"]


def _refusal(url: str, allow: str = "") -> dict[str, str]:
    with pytest.raises(CallRejected) as rejected:
        DestinationPolicy(allow).check_literal(url)
    assert rejected.value.code == ErrorCode.BLOCKED_DESTINATION
    assert isinstance(rejected.value.details, dict)
    return rejected.value.details


@pytest.mark.parametrize("v4", PRIVATE_V4)
@pytest.mark.parametrize("form", JUDGED)
def test_ipv6_forms_carrying_a_private_ipv4_are_blocked_by_what_they_carry(
    form: str, v4: str
) -> None:
    address = JUDGED[form](v4)

    assert _refusal(f"http://[{address}]/x") == {
        "host": str(address),
        "address": str(address),
        "form": form,
        "embedded_ipv4": v4,
    }


@pytest.mark.parametrize("v4", PUBLIC_V4)
@pytest.mark.parametrize("form", JUDGED)
def test_ipv6_forms_carrying_a_public_ipv4_are_allowed(form: str, v4: str) -> None:
    DestinationPolicy("").check_literal(f"https://[{JUDGED[form](v4)}]/x")


@pytest.mark.parametrize("v4", PRIVATE_V4 + PUBLIC_V4)
@pytest.mark.parametrize("form", UNJUDGEABLE)
def test_ipv6_forms_that_cannot_be_judged_are_blocked_whatever_they_carry(
    form: str, v4: str
) -> None:
    refusal = _refusal(f"http://[{UNJUDGEABLE[form](v4)}]/x")

    assert refusal["form"] == form
    assert refusal["reason"]
    assert "embedded_ipv4" not in refusal


@pytest.mark.parametrize(
    ("url", "embedded"),
    [
        ("http://[64:ff9b::a00:1]/", "10.0.0.1"),
        ("http://[64:ff9b::127.0.0.1]:8080/", "127.0.0.1"),
        ("http://[2002:a9fe:a9fe::1]/latest/meta-data", "169.254.169.254"),
        ("http://[::10.0.0.1]/", "10.0.0.1"),
        ("http://[::a00:1]/", "10.0.0.1"),
        ("http://[::ffff:192.168.1.1]/", "192.168.1.1"),
        ("http://[::FFFF:7F00:1]/", "127.0.0.1"),
    ],
)
def test_literals_as_a_probe_would_write_them_are_blocked(url: str, embedded: str) -> None:
    assert _refusal(url)["embedded_ipv4"] == embedded


def test_loopback_and_unspecified_are_not_read_as_ipv4_compatible() -> None:
    assert _refusal("http://[::1]/") == {"host": "::1", "address": "::1"}
    assert _refusal("http://[::]/") == {"host": "::", "address": "::"}


def test_operators_allow_wrapping_forms_by_their_ipv6_prefix_only() -> None:
    DestinationPolicy("64:ff9b::/96").check_literal("http://[64:ff9b::a00:1]/")
    DestinationPolicy("2001::/32").check_literal(f"http://[{_teredo('10.0.0.1')}]/")
    # Allowing the IPv4 network does not allow reaching it through a translator.
    _refusal("http://[64:ff9b::a00:1]/", allow="10.0.0.0/8")


@pytest.mark.parametrize("v4", PRIVATE_V4)
@pytest.mark.parametrize("form", [*JUDGED, *UNJUDGEABLE])
async def test_the_resolver_judges_ipv6_forms_as_literals_are_judged(
    monkeypatch: pytest.MonkeyPatch, form: str, v4: str
) -> None:
    address = str({**JUDGED, **UNJUDGEABLE}[form](v4))
    resolving_to(monkeypatch, address, socket.AF_INET6)
    resolver = GuardedResolver(DestinationPolicy(""))

    with pytest.raises(BlockedDestination) as refused:
        await resolver.resolve("rebind.example", 443, socket.AF_INET6)

    assert (refused.value.host, refused.value.address) == ("rebind.example", address)
    assert form in str(refused.value)


@pytest.mark.parametrize("form", JUDGED)
async def test_the_resolver_keeps_ipv6_forms_carrying_a_public_ipv4(
    monkeypatch: pytest.MonkeyPatch, form: str
) -> None:
    address = str(JUDGED[form]("8.8.8.8"))
    resolving_to(monkeypatch, address, socket.AF_INET6)
    resolver = GuardedResolver(DestinationPolicy(""))

    results = await resolver.resolve("public.example", 443, socket.AF_INET6)

    assert [r["host"] for r in results] == [address]


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("http://[64:ff9b::a00:1]:9/book", "64:ff9b::a00:1"),  # checked before sending
        ("http://nat64.example:9/book", "nat64.example"),  # checked at connect time
    ],
)
async def test_a_call_to_a_wrapped_private_address_fails_saying_what_was_judged(
    monkeypatch: pytest.MonkeyPatch, url: str, host: str
) -> None:
    resolving_to(monkeypatch, "64:ff9b::a00:1", socket.AF_INET6)
    policy = DestinationPolicy("")
    run = Executor(Sender(4, policy, 1024), policy, {})

    outcome = await run.run(work_item({"url": url}))

    assert outcome.failure is not None
    assert (outcome.failure.code, outcome.failure.details) == (
        "blocked_destination",
        {
            "host": host,
            "address": "64:ff9b::a00:1",
            "form": "NAT64 64:ff9b::/96",
            "embedded_ipv4": "10.0.0.1",
        },
    )
    await run.sender.close()
