"""Which addresses tools may call."""

import pytest

from services.http_executor.destinations import DestinationPolicy
from shared.errors import CallRejected, ErrorCode


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x",
        "http://10.1.2.3/",
        "http://[::1]:8080/",
        "http://169.254.169.254/latest/meta-data",
        "http://localhost/",
        "http://192.168.0.10/",
    ],
)
async def test_loopback_private_and_link_local_are_blocked(url: str) -> None:
    with pytest.raises(CallRejected) as rejected:
        await DestinationPolicy("").check(url)
    assert rejected.value.code == ErrorCode.BLOCKED_DESTINATION


async def test_public_addresses_are_allowed() -> None:
    await DestinationPolicy("").check("https://8.8.8.8/resolve")


@pytest.mark.parametrize("allow", ["10.0.0.0/8", "10.1.2.3", "internal.example, 10.1.2.0/24"])
async def test_operators_can_allow_networks(allow: str) -> None:
    await DestinationPolicy(allow).check("http://10.1.2.3/x")


async def test_operators_can_allow_host_names_without_resolving_them() -> None:
    await DestinationPolicy("billing.internal").check("http://billing.internal/x")


async def test_an_unresolvable_host_is_a_connection_error() -> None:
    with pytest.raises(CallRejected) as rejected:
        await DestinationPolicy("").check("http://no-such-host.invalid/")
    assert rejected.value.code == ErrorCode.CONNECTION_ERROR
