"""Which addresses tools may call: literals before the request, names in the resolver."""

import pytest

from services.http_executor.client import Sender
from services.http_executor.destinations import (
    BlockedDestination,
    DestinationPolicy,
    GuardedResolver,
)
from services.http_executor.execute import Executor
from shared.errors import CallRejected, ErrorCode
from tests.factories import work_item


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x",
        "http://10.1.2.3/",
        "http://[::1]:8080/",
        "http://169.254.169.254/latest/meta-data",
        "http://192.168.0.10/",
        "http://100.64.0.1/",
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
