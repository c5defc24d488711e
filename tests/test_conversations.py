"""A conversation's variables: kept per account, and prompts rendered with them."""

import json
from collections.abc import AsyncIterator

import nats
import pytest
from nats.js.kv import KeyValue

from shared.contract import subjects
from shared.contract.addressing import Conversation, conversation_key
from shared.fabric import jetstream
from shared.fabric.conversations import ConversationVariables, render_prompt
from tests.support.stale_buckets import PurgedBeforeOwnRead


def test_set_variables_fill_in_and_unset_ones_render_empty_and_are_listed() -> None:
    text, unset = render_prompt(
        "Total {{order_price}} for {{name}}; {{ order_price }} again; {{who.first}} {{missing}}",
        {"order_price": 12.5, "name": "Ana", "who": {"first": "Bo"}},
    )

    assert text == "Total 12.5 for Ana; 12.5 again; Bo "
    assert unset == ["missing"]


def test_a_template_without_variables_is_left_as_it_is() -> None:
    assert render_prompt("Hello {name} and {{ }}", {}) == ("Hello {name} and {{ }}", [])


# --- variables are an account's own, and those stored before are carried over -------------


@pytest.fixture
async def bucket(nats_url: str) -> AsyncIterator[KeyValue]:
    client = await nats.connect(nats_url)
    js = client.jetstream()
    await jetstream.ensure(js)
    yield await js.key_value(subjects.CONVERSATIONS_BUCKET)
    await client.close()


async def test_variables_stored_before_accounts_keyed_them_stay_their_accounts(
    bucket: KeyValue,
) -> None:
    # As the version before stored them: under the conversation id, naming the account.
    legacy = {"account_id": "acme", "variables": {"order_total": 42, "name": "Ana"}}
    await bucket.put("conv-1", json.dumps(legacy).encode())
    variables = ConversationVariables(bucket)

    read_before = await variables.get("acme", "conv-1")
    other_account = await variables.get("globex", "conv-1")
    await variables.merge(Conversation("acme", "conv-1"), {"order_total": 43})
    await variables.merge(Conversation("globex", "conv-1"), {"order_total": 7})

    assert read_before == {"order_total": 42, "name": "Ana"}
    assert other_account == {}
    # The next write carries the stored ones over to the account's own key.
    stored = await bucket.get(conversation_key("acme", "conv-1"))
    assert json.loads(stored.value or b"") == {
        "account_id": "acme",
        "variables": {"order_total": 43, "name": "Ana"},
    }
    assert await variables.get("acme", "conv-1") == {"order_total": 43, "name": "Ana"}
    assert await variables.get("globex", "conv-1") == {"order_total": 7}


async def test_a_first_write_refused_then_not_found_is_merged_again(bucket: KeyValue) -> None:
    key = conversation_key("acme", "conv-2")
    await ConversationVariables(bucket).merge(Conversation("acme", "conv-2"), {"name": "Ana"})
    stale = PurgedBeforeOwnRead(bucket._js, subjects.CONVERSATIONS_BUCKET, key)

    # A replica that knows nothing of the key creates it: refused, then nothing there.
    await ConversationVariables(stale).merge(Conversation("acme", "conv-2"), {"total": 3})

    assert stale.purged == [key]
    stored = await bucket.get(key)
    assert json.loads(stored.value or b"") == {"account_id": "acme", "variables": {"total": 3}}
