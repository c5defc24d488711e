"""Billing end to end: a real nats-server, real databases, the REST API as a client sees it."""

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, SequenceInfo
from nats.js.errors import KeyNotFoundError
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services.billing.api import build_app
from services.billing.app import ENDED, USAGE, BillingHandlers, consumers
from services.billing.main import BillingService
from services.billing.store import StoreUnavailable, UsageStore
from shared.contract import subjects
from shared.contract.events import CallCancel, ConversationEnded, UsageRecord
from shared.fabric import jetstream
from shared.fabric.messaging import REASON_HEADER, SUBJECT_HEADER, DeadLetters, Publisher
from shared.process.storage import build_engine
from shared.security.api_keys import KeyRing, StoredKey, bearer, new_key
from shared.settings import Settings
from tests.factories import T0, usage
from tests.support.keys import ADMIN_KEY, AS_ADMIN

T = TypeVar("T")
WAIT_S = 10.0


async def eventually(probe: Callable[[], Awaitable[T | None]]) -> T:
    """Poll ``probe`` until it returns something other than None, for at most WAIT_S."""
    async with asyncio.timeout(WAIT_S):
        while True:
            value = await probe()
            if value is not None:
                return value
            await asyncio.sleep(0.02)


async def publish_usage(js: JetStreamContext, record: UsageRecord, msg_id: str) -> None:
    await js.publish(
        subjects.usage(record.account_id),
        record.model_dump_json().encode(),
        headers={"Nats-Msg-Id": msg_id},
    )


# -- the REST API over a real store, no NATS ------------------------------------------------


async def test_account_usage_is_exactly_the_contract_shape(
    billing_api: httpx.AsyncClient, usage_store: UsageStore
) -> None:
    usage_store.record(usage("call-1"))
    usage_store.record(
        usage("call-2", status="error", input_tokens=5, output_tokens=0, units=0.125)
    )

    response = await billing_api.get("/v1/usage", params={"account_id": "acme"})

    assert response.status_code == 200
    assert response.json() == {
        "account_id": "acme",
        "calls": 2,
        "errors": 1,
        "replays": 0,
        "input_tokens": 26,
        "output_tokens": 14,
        "units": 0.4,
    }


async def test_account_usage_between_since_inclusive_and_until_exclusive(
    billing_api: httpx.AsyncClient, usage_store: UsageStore
) -> None:
    for minute in range(3):
        usage_store.record(usage(f"call-{minute}", at=T0 + timedelta(minutes=minute)))

    response = await billing_api.get(
        "/v1/usage",
        params={
            "account_id": "acme",
            "since": "2026-11-21T10:00:00.123Z",
            "until": "2026-11-21T11:02:00.123+01:00",
        },
    )

    assert response.json() == {
        "account_id": "acme",
        "calls": 2,
        "errors": 0,
        "replays": 0,
        "input_tokens": 42,
        "output_tokens": 28,
        "units": 0.55,
    }


async def test_an_account_without_usage_has_zero_totals(billing_api: httpx.AsyncClient) -> None:
    response = await billing_api.get("/v1/usage", params={"account_id": "nobody"})

    assert response.json() == {
        "account_id": "nobody",
        "calls": 0,
        "errors": 0,
        "replays": 0,
        "input_tokens": 0,
        "output_tokens": 0,
        "units": 0.0,
    }


@pytest.mark.parametrize(
    ("parameter", "value"),
    [
        ("since", "yesterday"),
        ("until", "2026-13-01T00:00:00Z"),
        ("since", "2026-11-21T10:00:00"),
    ],
)
async def test_a_malformed_time_is_a_422_naming_the_parameter(
    billing_api: httpx.AsyncClient, parameter: str, value: str
) -> None:
    response = await billing_api.get("/v1/usage", params={"account_id": "acme", parameter: value})

    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert error["message"].startswith(f"query.{parameter}: ")


async def test_account_id_is_required(billing_api: httpx.AsyncClient) -> None:
    response = await billing_api.get("/v1/usage")

    assert response.status_code == 422
    assert response.json()["error"]["message"] == "query.account_id: Field required"


async def test_an_unknown_conversation_is_a_404(billing_api: httpx.AsyncClient) -> None:
    response = await billing_api.get("/v1/usage/conversations/conv-unknown")

    assert response.status_code == 404
    assert response.json() == {
        "error": {
            "code": "not_found",
            "message": "billing has no usage and no end for conversation 'conv-unknown'",
            "details": None,
        }
    }


async def test_healthz(billing_api: httpx.AsyncClient) -> None:
    response = await billing_api.get("/healthz")

    assert (response.status_code, response.json()) == (200, {"status": "ok"})


# -- two accounts' conversations of one id, as each key sees them ----------------------------


@dataclass(frozen=True)
class Entry:
    value: bytes


class AccountKeys:
    """A keys bucket holding some account keys, as the registry mirrors them."""

    def __init__(self, *stored: StoredKey) -> None:
        self._stored = {key.key_id: key for key in stored}

    async def get(self, key_id: str) -> Entry:
        if key_id not in self._stored:
            raise KeyNotFoundError
        return Entry(self._stored[key_id].model_dump_json().encode())


KEYS = {account: new_key(account) for account in ("acme", "globex")}
AS = {account: bearer(key) for account, (key, _) in KEYS.items()} | {"admin": AS_ADMIN}
OURS = usage("call-1", at=T0)
# The same call id, chosen by another account's runtime in its own conv-42.
THEIRS = usage("call-1", account_id="globex", at=T0 + timedelta(seconds=2), status="error")


@pytest.fixture
async def keyed_api(usage_store: UsageStore) -> AsyncIterator[httpx.AsyncClient]:
    """Billing's REST API with acme's and globex's keys, conv-42's calls of each stored."""
    usage_store.record_many([OURS, THEIRS])
    keys = AccountKeys(*(stored for _, stored in KEYS.values()))
    app = build_app(usage_store, KeyRing(ADMIN_KEY, keys))  # type: ignore[arg-type]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://billing") as client:
        yield client


async def conversation_as(
    api: httpx.AsyncClient, who: str, conversation_id: str = "conv-42", **params: str
) -> tuple[int, Any]:
    url = f"/v1/usage/conversations/{conversation_id}"
    response = await api.get(url, headers=AS[who], params=params)
    return response.status_code, response.json()


def summary(
    account_id: str | None,
    calls: list[UsageRecord],
    totals: dict[str, Any],
    ended: bool,
    conversation_id: str = "conv-42",
) -> dict[str, Any]:
    """A conversation's summary as the contract shows it."""
    return {
        "conversation_id": conversation_id,
        "account_id": account_id,
        "calls": [call.model_dump(mode="json") for call in calls],
        "totals": totals,
        "ended": ended,
    }


TOTALS = ("calls", "errors", "replays", "input_tokens", "output_tokens", "units")
OUR_TOTALS = dict(zip(TOTALS, (1, 0, 0, 21, 14, 0.275), strict=True))
THEIR_TOTALS = dict(zip(TOTALS, (1, 1, 0, 21, 14, 0.275), strict=True))
BOTH_TOTALS = dict(zip(TOTALS, (2, 1, 0, 42, 28, 0.55), strict=True))
NO_TOTALS = dict(zip(TOTALS, (0, 0, 0, 0, 0, 0.0), strict=True))


def not_found(conversation_id: str) -> dict[str, Any]:
    message = f"billing has no usage and no end for conversation '{conversation_id}'"
    return {"error": {"code": "not_found", "message": message, "details": None}}


async def test_each_account_sees_its_own_conversation_of_a_shared_id(
    keyed_api: httpx.AsyncClient, usage_store: UsageStore
) -> None:
    usage_store.end_conversation("acme", "conv-42", T0 + timedelta(seconds=9))

    acme = summary("acme", [OURS], OUR_TOTALS, ended=True)
    globex = summary("globex", [THEIRS], THEIR_TOTALS, ended=False)
    assert await conversation_as(keyed_api, "acme") == (200, acme)
    assert await conversation_as(keyed_api, "globex") == (200, globex)
    assert await conversation_as(keyed_api, "admin", account_id="acme") == (200, acme)
    assert await conversation_as(keyed_api, "admin", account_id="globex") == (200, globex)
    # Every account's calls, as before accounts: ended once each conversation has.
    everyone = summary(None, [OURS, THEIRS], BOTH_TOTALS, ended=False)
    assert await conversation_as(keyed_api, "admin") == (200, everyone)


async def test_a_shared_end_ends_the_conversation_id_in_every_account(
    keyed_api: httpx.AsyncClient, usage_store: UsageStore
) -> None:
    usage_store.end_conversation(None, "conv-42", T0 + timedelta(seconds=9))

    acme = summary("acme", [OURS], OUR_TOTALS, ended=True)
    globex = summary("globex", [THEIRS], THEIR_TOTALS, ended=True)
    everyone = summary(None, [OURS, THEIRS], BOTH_TOTALS, ended=True)
    assert await conversation_as(keyed_api, "acme") == (200, acme)
    assert await conversation_as(keyed_api, "globex") == (200, globex)
    assert await conversation_as(keyed_api, "admin") == (200, everyone)


async def test_an_account_key_naming_another_account_finds_nothing(
    keyed_api: httpx.AsyncClient,
) -> None:
    acme = summary("acme", [OURS], OUR_TOTALS, ended=False)

    assert await conversation_as(keyed_api, "acme", account_id="acme") == (200, acme)
    assert await conversation_as(keyed_api, "acme", account_id="globex") == (
        404,
        not_found("conv-42"),
    )


async def test_a_shared_end_alone_shows_no_account_a_conversation(
    keyed_api: httpx.AsyncClient, usage_store: UsageStore
) -> None:
    usage_store.end_conversation(None, "conv-quiet", T0)

    assert await conversation_as(keyed_api, "acme", "conv-quiet") == (404, not_found("conv-quiet"))
    assert await conversation_as(keyed_api, "admin", "conv-quiet", account_id="acme") == (
        404,
        not_found("conv-quiet"),
    )
    assert await conversation_as(keyed_api, "admin", "conv-quiet") == (
        200,
        summary(None, [], NO_TOTALS, ended=True, conversation_id="conv-quiet"),
    )


async def test_an_accounts_own_end_shows_it_its_conversation_without_calls(
    keyed_api: httpx.AsyncClient, usage_store: UsageStore
) -> None:
    usage_store.end_conversation("acme", "conv-quiet", T0)

    assert await conversation_as(keyed_api, "acme", "conv-quiet") == (
        200,
        summary("acme", [], NO_TOTALS, ended=True, conversation_id="conv-quiet"),
    )
    assert await conversation_as(keyed_api, "globex", "conv-quiet") == (
        404,
        not_found("conv-quiet"),
    )


async def test_an_empty_account_id_is_a_422(keyed_api: httpx.AsyncClient) -> None:
    # "" is no account (a shared end is stored under it): never one to ask for.
    status, body = await conversation_as(keyed_api, "admin", account_id="")

    assert (status, body["error"]["code"]) == (422, "invalid_request")
    assert body["error"]["message"].startswith("query.account_id: ")


# -- the whole service on a real nats-server ------------------------------------------------


def settings_of(nats_url: str, database_url: str, data_dir: Path) -> Settings:
    return Settings(
        nats_url=nats_url,
        database_url=database_url,
        billing_port=0,
        data_dir=data_dir,
        admin_key=ADMIN_KEY,
    )


@pytest.fixture
async def service(
    nats_url: str, database_url: str, tmp_path: Path
) -> AsyncIterator[BillingService]:
    billing = BillingService(settings_of(nats_url, database_url, tmp_path))
    await billing.start()
    yield billing
    await billing.stop()


@pytest.fixture
async def js(nats_url: str) -> AsyncIterator[JetStreamContext]:
    client = await nats.connect(nats_url)
    yield client.jetstream()
    await client.close()


@pytest.fixture
async def rest(service: BillingService) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{service.port}", headers=AS_ADMIN
    ) as client:
        yield client


async def usage_consumer_idle(js: JetStreamContext) -> bool | None:
    """True once every usage message was delivered and acked."""
    info = await js.consumer_info(subjects.USAGE_STREAM, USAGE.name)
    return True if info.num_pending == 0 and info.num_ack_pending == 0 else None


async def test_a_call_published_twice_is_billed_once(
    js: JetStreamContext, rest: httpx.AsyncClient
) -> None:
    first = usage("call-1")
    await publish_usage(js, first, "usage-call-1")
    await publish_usage(js, first, "usage-call-1-again")  # JetStream does not de-duplicate it
    await publish_usage(js, usage("call-2", status="error", units=0.1), "usage-call-2")

    await eventually(lambda: usage_consumer_idle(js))
    response = await rest.get("/v1/usage", params={"account_id": "acme"})

    assert response.json() == {
        "account_id": "acme",
        "calls": 2,
        "errors": 1,
        "replays": 0,
        "input_tokens": 42,
        "output_tokens": 28,
        "units": 0.375,
    }


async def test_a_conversation_summary_closes_when_the_conversation_ends(
    js: JetStreamContext, rest: httpx.AsyncClient
) -> None:
    early, late = usage("call-1", at=T0), usage("call-2", at=T0 + timedelta(seconds=3))
    await publish_usage(js, late, "usage-call-2")
    await publish_usage(js, early, "usage-call-1")
    ended = ConversationEnded(conversation_id="conv-42", at=T0 + timedelta(seconds=9))
    await js.publish(subjects.ended("conv-42"), ended.model_dump_json().encode())

    async def closed() -> dict[str, Any] | None:
        body: dict[str, Any] = (await rest.get("/v1/usage/conversations/conv-42")).json()
        return body if body.get("ended") and len(body["calls"]) == 2 else None

    assert await eventually(closed) == {
        "conversation_id": "conv-42",
        "account_id": None,
        "calls": [early.model_dump(mode="json"), late.model_dump(mode="json")],
        "totals": {
            "calls": 2,
            "errors": 0,
            "replays": 0,
            "input_tokens": 42,
            "output_tokens": 28,
            "units": 0.55,
        },
        "ended": True,
    }


async def test_two_accounts_calls_of_one_id_are_each_billed_and_the_shared_end_ends_both(
    js: JetStreamContext, rest: httpx.AsyncClient
) -> None:
    await publish_usage(js, OURS, "usage-acme-call-1")
    await publish_usage(js, THEIRS, "usage-globex-call-1")
    # The shared runtime user's end; an account named in the body is no one's word.
    ended = {"conversation_id": "conv-42", "account_id": "acme", "at": T0.isoformat()}
    await js.publish(subjects.ended("conv-42"), json.dumps(ended).encode())

    async def closed() -> dict[str, Any] | None:
        body: dict[str, Any] = (await rest.get("/v1/usage/conversations/conv-42")).json()
        return body if body.get("ended") and len(body["calls"]) == 2 else None

    assert await eventually(closed) == summary(None, [OURS, THEIRS], BOTH_TOTALS, ended=True)
    globex = await rest.get("/v1/usage/conversations/conv-42", params={"account_id": "globex"})
    assert globex.json() == summary("globex", [THEIRS], THEIR_TOTALS, ended=True)


async def test_unparseable_messages_are_dead_lettered_and_billing_goes_on(
    js: JetStreamContext, rest: httpx.AsyncClient
) -> None:
    dead = await js.pull_subscribe(subjects.dead("billing"), stream=subjects.DEAD_STREAM)
    garbage = [
        (subjects.usage("acme"), b"not json at all", {}),
        (subjects.usage("acme"), b'{"call_id": "half', {"content-type": "application/json"}),
        (subjects.usage("acme"), b'{"call_id": "call-x"}', {}),
        (subjects.ended("conv-42"), b"\xff\xfe", {}),
    ]
    for subject, payload, headers in garbage:
        await js.publish(subject, payload, headers=headers)

    letters = await fetch_exactly(dead, len(garbage))

    assert sorted(dead_letter(m) for m in letters) == sorted(
        (payload, subject) for subject, payload, _ in garbage
    )
    assert all(m.headers and m.headers[REASON_HEADER].startswith("invalid ") for m in letters)
    await publish_usage(js, usage("call-1"), "usage-call-1")
    assert await eventually(lambda: billed_calls(rest, "acme", 1)) == 1
    await eventually(lambda: usage_consumer_idle(js))
    info = await js.consumer_info(subjects.USAGE_STREAM, USAGE.name)
    assert info.num_redelivered == 0  # garbage was acked, not retried


# -- ends: the subject says whose conversation ended -----------------------------------------


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    client = await nats.connect(nats_url)
    await jetstream.ensure(client.jetstream())
    yield client
    await client.close()


@pytest.fixture
def handlers(nc: Client, usage_store: UsageStore) -> BillingHandlers:
    """Billing's handlers, called here with messages on any subject (no consumer's filter)."""
    usage_store.record_many([OURS, THEIRS])
    return BillingHandlers(usage_store, DeadLetters(Publisher(nc.jetstream()), "billing"), 0.1)


# Another conversation, and an account: the body is the runtime's word, the subject is not.
END_BODY = json.dumps({"conversation_id": "conv-7", "account_id": "initech"}).encode()


@pytest.mark.parametrize(
    ("subject", "ended"),
    [
        # The shared runtime user: that conversation id in every account.
        ("midcall.conv.conv-42.ended", {"acme": True, "globex": True}),
        # An account's own runtime (nats-server put the account in the subject).
        ("midcall.conv.acme.conv-42.ended", {"acme": True, "globex": False}),
        ("midcall.conv.globex.conv-42.ended", {"acme": False, "globex": True}),
    ],
)
async def test_an_end_is_of_the_conversation_its_subject_names(
    handlers: BillingHandlers,
    nc: Client,
    usage_store: UsageStore,
    subject: str,
    ended: dict[str, bool],
) -> None:
    await handlers.close_conversation(Msg(nc, subject=subject, data=END_BODY))

    assert {account: ended_in(usage_store, "conv-42", account) for account in ended} == ended
    assert [ended_in(usage_store, "conv-7", a) for a in ("acme", "globex", "initech")] == [None] * 3


@pytest.mark.parametrize(
    ("subject", "body", "reason"),
    [
        ("midcall.conv.acme.conv-42.ended", b"not json", "invalid "),
        ("midcall.conv.conv-42.ended", b'{"at": "never"}', "invalid "),
        ("midcall.conv.acme.x.conv-42.ended", END_BODY, "not a conversation's end subject"),
        ("midcall.conv.ended", END_BODY, "not a conversation's end subject"),
    ],
)
async def test_an_end_billing_cannot_read_is_set_aside(
    handlers: BillingHandlers,
    nc: Client,
    js: JetStreamContext,
    usage_store: UsageStore,
    subject: str,
    body: bytes,
    reason: str,
) -> None:
    dead = await js.pull_subscribe(subjects.dead("billing"), stream=subjects.DEAD_STREAM)

    await handlers.close_conversation(Msg(nc, subject=subject, data=body))

    [letter] = await fetch_exactly(dead, 1)
    assert dead_letter(letter) == (body, subject)
    assert (letter.headers or {})[REASON_HEADER].startswith(reason)
    assert [ended_in(usage_store, "conv-42", a) for a in ("acme", "globex")] == [False, False]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_billing_takes_the_ends_only_even_from_a_durable_that_took_the_whole_stream(
    nc: Client, nats_url: str, database_url: str, tmp_path: Path
) -> None:
    js = nc.jetstream()
    # As an older billing made it: every subject of MIDCALL_ENDED, the cancels too.
    older = ConsumerConfig(
        durable_name=ENDED.name, filter_subject=subjects.ALL_CONV, ack_policy=AckPolicy.EXPLICIT
    )
    await js.add_consumer(subjects.ENDED_STREAM, older)
    billing = BillingService(settings_of(nats_url, database_url, tmp_path))
    await billing.start()
    try:
        cancel = CallCancel(call_id="call-1", reason="the caller hung up")
        await js.publish(subjects.cancel("conv-42"), cancel.model_dump_json().encode())
        ended = ConversationEnded(conversation_id="conv-42", at=T0)
        end = await js.publish(subjects.ended("conv-42"), ended.model_dump_json().encode())

        async def handled() -> tuple[ConsumerConfig, SequenceInfo] | None:
            info = await js.consumer_info(subjects.ENDED_STREAM, ENDED.name)
            delivered = info.delivered
            if delivered is None or delivered.stream_seq != end.seq or info.num_ack_pending:
                return None
            return info.config, delivered

        config, delivered = await eventually(handled)
    finally:
        await billing.stop()

    assert config.filter_subjects == [subjects.ALL_ENDED, subjects.ACCOUNT_ENDED]
    assert delivered.consumer_seq == 1  # the end alone: the cancel was never delivered


def ended_in(store: UsageStore, conversation_id: str, account_id: str) -> bool | None:
    found = store.conversation(conversation_id, account_id)
    return None if found is None else found.ended


async def fetch_exactly(subscription: JetStreamContext.PullSubscription, count: int) -> list[Msg]:
    """``count`` messages; a fetch returns as soon as some are there, so ask until all came."""
    messages: list[Msg] = []
    async with asyncio.timeout(WAIT_S):
        while len(messages) < count:
            with contextlib.suppress(nats.errors.TimeoutError):
                messages += await subscription.fetch(count - len(messages), timeout=0.5)
    return messages


def dead_letter(message: Msg) -> tuple[bytes, str]:
    assert message.headers is not None
    return message.data, message.headers[SUBJECT_HEADER]


async def billed_calls(rest: httpx.AsyncClient, account_id: str, expected: int) -> int | None:
    calls: int = (await rest.get("/v1/usage", params={"account_id": account_id})).json()["calls"]
    return calls if calls == expected else None


# -- tracing -----------------------------------------------------------------------------------


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_billing_continues_the_publishers_trace(
    js: JetStreamContext, rest: httpx.AsyncClient, spans: InMemorySpanExporter
) -> None:
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    await js.publish(
        subjects.usage("acme"),
        usage("call-1").model_dump_json().encode(),
        headers={"traceparent": f"00-{trace_id}-{parent_id}-01"},
    )

    async def bill_span() -> ReadableSpan | None:
        return next((s for s in spans.get_finished_spans() if s.name == "bill"), None)

    span = await eventually(bill_span)
    assert span.context is not None
    assert span.attributes is not None
    assert format(span.context.trace_id, "032x") == trace_id
    assert span.parent is not None
    assert span.parent.span_id == int(parent_id, 16)  # the publisher's own span is its parent
    assert span.attributes["midcall.call_id"] == "call-1"


# -- a database failure is retried, not acked --------------------------------------------------


class FailingFirst(UsageStore):
    """A real store whose first write fails, as if the database were briefly down."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.attempts: list[float] = []

    def record_many(self, usages: Sequence[UsageRecord]) -> int:
        self.attempts.append(time.monotonic())
        if len(self.attempts) == 1:
            raise StoreUnavailable("connection refused")
        return super().record_many(usages)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_database_failure_is_redelivered_after_a_delay(
    nats_url: str, database_url: str, tmp_path: Path, js: JetStreamContext
) -> None:
    engine = build_engine(Settings(database_url=database_url, data_dir=tmp_path))
    store = FailingFirst(engine)
    client = await nats.connect(nats_url)
    await jetstream.ensure(client.jetstream())
    usage_consumer, _ = consumers(client, store, retry_delay_s=0.3)
    await usage_consumer.start()
    try:
        await publish_usage(js, usage("call-1"), "usage-call-1")

        async def stored() -> int | None:
            calls = (await asyncio.to_thread(store.account_totals, "acme")).calls
            return calls or None

        assert await eventually(stored) == 1
    finally:
        await usage_consumer.stop()
        await client.close()
        engine.dispose()
    assert len(store.attempts) == 2
    assert store.attempts[1] - store.attempts[0] >= 0.25


async def test_a_record_the_database_cannot_hold_is_set_aside_and_the_rest_are_billed(
    js: JetStreamContext, rest: httpx.AsyncClient, database_url: str
) -> None:
    # PostgreSQL keeps no NUL in text; SQLite does, and bills it like any other.
    refuses_nul = database_url.startswith("postgresql")
    dead = await js.pull_subscribe(subjects.dead("billing"), stream=subjects.DEAD_STREAM)
    records = [usage("call-1"), usage("call-\x00-2"), usage("call-3")]
    for record in records:
        await publish_usage(js, record, record.call_id)

    await eventually(lambda: billed_calls(rest, "acme", 2 if refuses_nul else 3))

    if refuses_nul:
        [letter] = await fetch_exactly(dead, 1)
        assert letter.data == records[1].model_dump_json().encode()
        assert "NUL" in (letter.headers or {})[REASON_HEADER]
    await eventually(lambda: usage_consumer_idle(js))
    info = await js.consumer_info(subjects.USAGE_STREAM, USAGE.name)
    assert info.num_redelivered == 0  # set aside at once, not retried
