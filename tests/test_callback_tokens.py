"""Callback tokens: a call's own, unforgeable, and no longer than its call lives."""

import pytest

from shared.security.callback_tokens import (
    EXPIRY_GRACE_S,
    CallbackHeaders,
    TokenRefused,
    grant_for,
    issue,
    signing_key,
    verify,
)
from tests.factories import work_item

KEY = signing_key(b"m" * 32)
WORK = work_item({"url": "https://api.example.com/search"})
CALL = WORK.call.call_id
LIVE = WORK.deadline_at.timestamp()


def refusal(
    token: str | None, call_id: str = CALL, key: bytes = KEY, now: float = LIVE
) -> tuple[int, str]:
    with pytest.raises(TokenRefused) as refused:
        verify(token, call_id, key, now)
    return refused.value.status, refused.value.message


def test_a_token_grants_its_own_calls_run() -> None:
    grant = verify(issue(grant_for(WORK), KEY), CALL, KEY, LIVE)

    assert grant == grant_for(WORK)
    assert grant.conversation == WORK.conversation
    assert grant.expires == int(WORK.deadline_at.timestamp()) + EXPIRY_GRACE_S


def test_every_request_of_a_call_carries_the_same_token_and_its_url() -> None:
    headers = CallbackHeaders(KEY, "https://midcall.example.com/v1/calls")

    assert headers.for_work(WORK) == headers.for_work(WORK)
    assert headers.for_work(WORK)["Midcall-Callback-Url"] == (
        f"https://midcall.example.com/v1/calls/{CALL}"
    )


def test_a_call_id_is_percent_encoded_in_the_url() -> None:
    odd = WORK.model_copy(update={"call": WORK.call.model_copy(update={"call_id": "a/b c?"})})

    url = CallbackHeaders(KEY, "http://r/v1/calls").for_work(odd)["Midcall-Callback-Url"]

    assert url == "http://r/v1/calls/a%2Fb%20c%3F"


def test_tokens_that_grant_nothing_say_why() -> None:
    token = issue(grant_for(WORK), KEY)
    version, payload, mac = token.split(".")
    not_ours = (403, "The Midcall-Callback-Token is not one Midcall issued.")

    assert refusal(None)[0] == refusal("")[0] == 401
    assert refusal(token, key=signing_key(b"other master key 32 bytes long!!")) == not_ours
    assert refusal(f"{version}.{payload}x.{mac}") == not_ours
    assert refusal(f"v2.{payload}.{mac}") == not_ours
    assert refusal("v1..") == not_ours
    assert refusal("v1.%%%.***") == not_ours
    assert refusal(token, call_id="call-other") == (
        403,
        "The Midcall-Callback-Token is another call's, not call-other's.",
    )
    assert refusal(token, now=LIVE + EXPIRY_GRACE_S + 1) == (
        410,
        "The call's deadline has passed: it was answered without this.",
    )
