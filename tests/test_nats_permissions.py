"""One NATS user per role (shared.security.nats_auth), enforced by a real nats-server.

Each test starts nats-server with the rendered ``authorization`` block, has
the setup role create the streams and buckets, and connects each role as its
service would (its user, its inbox prefix). A refused publish is seen as the
server says it: a ``permissions violation`` through nats-py's error callback
(and, for a JetStream publish, no PubAck). A ``root`` user, in the tests
only, inspects what landed where.
"""

import asyncio
import json
import secrets
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nats
import nats.errors
import pytest
from faststream.nats import NatsBroker
from faststream.nats.security import NatsUserPassword
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.errors import NotFoundError

from services.billing.app import ENDED, USAGE
from services.code_executor.main import DURABLE as RUN_CODE
from services.demo.runtime import Runtime
from services.dispatcher.app import DURABLE as DISPATCH
from services.dispatcher.app import REPLAYS
from services.dispatcher.directory import Directory
from services.http_executor.main import DURABLE as EXECUTE
from services.registry.catalog_writer import CatalogWriter
from services.registry.failure_intake import DEAD_LETTERS, RUNS
from services.result_injector.app import DEADLINES
from services.result_injector.app import DURABLE as INJECT
from shared.contract import subjects
from shared.contract.addressing import Conversation
from shared.contract.catalog import AgentEntry
from shared.contract.events import (
    CallRun,
    ConversationEnded,
    ExecutionOutcome,
    ReplayRequest,
    ToolCall,
    ToolCallPending,
    ToolCallResult,
    UsageRecord,
)
from shared.contract.tools import Tool
from shared.fabric import jetstream
from shared.fabric.call_marks import CallMarks, Mark, run_key
from shared.fabric.consumer import BatchConsumer, Retry, WorkConsumer
from shared.fabric.conversations import ConversationVariables
from shared.fabric.deadline_timers import DeadlineTimers
from shared.fabric.messaging import DeadLetters, Publisher, msg_id
from shared.fabric.nats_server import NatsServer
from shared.fabric.pull_flow import Durable
from shared.security.nats_auth import (
    ACCOUNT_SHARES,
    CREDENTIALS_FILE,
    DURABLES,
    JS_API,
    RUNTIME_JS_DOMAIN,
    SERVICES,
    NatsUser,
    Permissions,
    Role,
    connect_options,
    inbox_prefix,
    load_or_create_credentials,
    permissions,
    push_consumers,
    read_credentials,
    render_accounts,
    role_user,
    stream_has_durables,
)
from tests.factories import usage, work_item

CONV = "c1"
CALL = "call-1"
# The conversation as the shared runtime user placed it, and as acme's own runtimes did.
SHARED = Conversation("acme", CONV)
TENANT = Conversation("acme", CONV, "acme")
# Long enough for a PubAck on a loaded CI machine; a refused publish waits this out.
REFUSED_S = 0.5
SETTLE_S = 10.0

ROOT = "root"  # tests only: sees everything in Midcall's account, to check what landed where
# Tests only: a runtime's grants plus more, inside Midcall's account, to show why no
# client there gets them.
PULLING_RUNTIME = "runtime-that-pulls"
PUSHING_RUNTIME = "runtime-with-push-consumers"


# --- the secured server ----------------------------------------------------------------


class Violations:
    """The permission errors nats-server reported to one connection."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self._changed = asyncio.Condition()

    async def record(self, error: Exception) -> None:
        # nats-py's error callback (it takes coroutine functions only).
        async with self._changed:
            self.seen.append(str(error))
            self._changed.notify_all()

    async def expect(self, operation: str, subject: str) -> None:
        """Wait for the server to refuse ``operation`` (publish, subscription) on ``subject``."""
        # nats-py lowercases the whole error line.
        said = f'permissions violation for {operation} to "{subject}"'.lower()
        async with asyncio.timeout(SETTLE_S), self._changed:
            await self._changed.wait_for(lambda: any(said in seen for seen in self.seen))


@dataclass
class Conn:
    nc: Client
    violations: Violations

    @property
    def js(self) -> JetStreamContext:
        return self.nc.jetstream()

    @property
    def impatient_js(self) -> JetStreamContext:
        """For requests the server is expected to drop: no answer is ever coming."""
        return self.nc.jetstream(timeout=REFUSED_S)

    async def clean(self) -> None:
        """Nothing this connection sent so far was refused.

        The server answers a flush after everything sent before it, refusals
        included, so an empty list then is a fact, not a race.
        """
        await self.nc.flush()
        assert self.violations.seen == []


@dataclass
class Secured:
    url: str
    passwords: dict[Role, str]
    extra: dict[str, str]
    connections: list[Client] = field(default_factory=list)
    _root: JetStreamContext | None = None

    async def connect(self, role: Role) -> Conn:
        return await self._connect(**connect_options(role, self.passwords[role]))

    async def connect_as(self, user: str, inbox: str = inbox_prefix(Role.RUNTIME)) -> Conn:
        return await self._connect(user=user, password=self.extra[user], inbox_prefix=inbox)

    async def root(self) -> JetStreamContext:
        if self._root is None:
            self._root = (await self.connect_as(ROOT, "_INBOX")).nc.jetstream()
        return self._root

    async def _connect(self, user: str, password: str, inbox_prefix: str) -> Conn:
        violations = Violations()
        client = await nats.connect(
            self.url,
            user=user,
            password=password,
            inbox_prefix=inbox_prefix,
            error_cb=violations.record,
            allow_reconnect=False,
        )
        self.connections.append(client)
        return Conn(client, violations)

    async def close(self) -> None:
        for client in self.connections:
            await client.close()


def _test_users(passwords: dict[str, str]) -> list[NatsUser]:
    runtime = permissions(Role.RUNTIME)
    pulls = Permissions(
        publish=(
            f"{JS_API}.CONSUMER.CREATE.{subjects.ENDED_STREAM}",
            f"{JS_API}.CONSUMER.MSG.NEXT.{subjects.ENDED_STREAM}.*",
        )
    )
    granted = {
        ROOT: Permissions(publish=(">",), subscribe=(">",)),
        PULLING_RUNTIME: runtime + pulls,
        # Consumers beside billing's durable, which a runtime is never given.
        PUSHING_RUNTIME: runtime + push_consumers(subjects.ENDED_STREAM),
    }
    return [NatsUser(name, json.dumps(passwords[name]), granted[name]) for name in granted]


@pytest.fixture
async def secured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Secured]:
    passwords = load_or_create_credentials(tmp_path / "data")
    extra = {name: secrets.token_urlsafe(16) for name in (ROOT, PULLING_RUNTIME, PUSHING_RUNTIME)}
    users = [role_user(role, json.dumps(password)) for role, password in passwords.items()]
    authorization = render_accounts(users + _test_users(extra))
    server = NatsServer(tmp_path / "nats", authorization=authorization)
    fabric = Secured(server.start(), passwords, extra)
    try:
        setup = await fabric.connect(Role.SETUP)
        await jetstream.ensure(setup.js)
        await setup.clean()
        yield fabric
    finally:
        await fabric.close()
        await server.astop()


# --- helpers ---------------------------------------------------------------------------


async def refused_publish(conn: Conn, subject: str, body: bytes, msg_id: str = "") -> None:
    """A JetStream publish the server drops: a violation is reported, no PubAck comes."""
    headers = {"Nats-Msg-Id": msg_id} if msg_id else None
    with pytest.raises(nats.errors.TimeoutError):
        await conn.impatient_js.publish(subject, body, headers=headers)
    await conn.violations.expect("publish", subject)


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    """Poll server state (it has no event for it) until ``check`` holds."""
    async with asyncio.timeout(SETTLE_S):
        while True:
            if await check():
                return
            await asyncio.sleep(0.01)


async def settled(root: JetStreamContext, durable: Durable) -> None:
    """Every message of ``durable`` delivered and acked (so its acks were allowed)."""

    async def done() -> bool:
        info = await root.consumer_info(durable.stream, durable.name)
        return not info.num_pending and not info.num_ack_pending

    await eventually(done)


async def stored(root: JetStreamContext, stream: str, subject: str) -> bytes | None:
    try:
        return (await root.get_last_msg(stream, subject)).data
    except NotFoundError:
        return None


class Inbox:
    """Messages handed to a consumer's handler, awaited one by one."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[Msg] = asyncio.Queue()

    async def handle(self, message: Msg) -> None:
        await self._queue.put(message)

    async def handle_batch(self, batch: list[Msg]) -> None:
        for message in batch:
            await self._queue.put(message)

    async def next(self) -> Msg:
        async with asyncio.timeout(SETTLE_S):
            return await self._queue.get()


def tool_call(conversation_id: str = CONV, call_id: str = CALL) -> ToolCall:
    return ToolCall(call_id=call_id, conversation_id=conversation_id, agent_id="a", tool="T")


def result(body: str = "real") -> ToolCallResult:
    return ToolCallResult(
        call_id=CALL, conversation_id=CONV, tool="T", status="success", result=body
    )


def tool() -> Tool:
    return Tool.model_validate({"name": "T", "request": {"url": "https://api.example.com/t"}})


def matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: ``*`` is one token, a final ``>`` one or more."""
    wanted, got = pattern.split("."), subject.split(".")
    for index, token in enumerate(wanted):
        if token == ">":
            return len(got) > index
        if index >= len(got) or token not in ("*", got[index]):
            return False
    return len(wanted) == len(got)


def allowed(granted: tuple[str, ...], subject: str) -> bool:
    return any(matches(pattern, subject) for pattern in granted)


# --- the table -------------------------------------------------------------------------


def test_the_durables_granted_are_the_services_own() -> None:
    services = {
        Role.DISPATCHER: (DISPATCH, REPLAYS),
        Role.HTTP_EXECUTOR: (EXECUTE,),
        Role.CODE_EXECUTOR: (RUN_CODE,),
        Role.RESULT_INJECTOR: (INJECT, DEADLINES),
        Role.BILLING: (USAGE, ENDED),
        Role.REGISTRY: (RUNS, DEAD_LETTERS),
    }
    for role, durables in services.items():
        granted = {
            (g.stream, g.name, g.filter_subject, g.exhausted, g.also) for g in DURABLES[role]
        }
        # The max-deliveries backstop runs for every durable with a max_deliver.
        used = {(d.stream, d.name, d.subject, d.max_deliver > 0, d.also) for d in durables}
        assert granted == used, role


def test_no_role_can_listen_to_another_roles_inbox() -> None:
    for role in Role:
        for other in Role:
            reply = f"{inbox_prefix(other)}.nuid.token"
            assert allowed(permissions(role).subscribe, reply) == (role == other)


def test_every_stream_and_bucket_is_written_and_read_by_a_role() -> None:
    """A stream or bucket added to shared.fabric.jetstream fails here until roles are granted it."""
    writers = [permissions(role) for role in (*SERVICES, Role.RUNTIME)]
    # An account's own runtimes publish into Midcall's account through its service imports.
    imported = [share.subject for share in ACCOUNT_SHARES if share.kind == "service"]
    writers.append(Permissions(publish=tuple(imported)))
    for stream in jetstream.STREAMS:
        # Deadlines are published by nats-server itself, from the timers' schedules.
        for captured in set(stream.subjects or []) - {subjects.ALL_DEADLINES}:
            # Some role publishes inside it (a pattern, read as a subject, that it captures).
            assert any(matches(captured, p) for w in writers for p in w.publish), captured
        # And some role reads it: a service's durable, or (MIDCALL_CONV) runtimes' own
        # consumers; an account's own runtimes' events are stored only to be kept once.
        readers = stream_has_durables(stream.name or "") or stream.name in (
            subjects.CONV_STREAM,
            subjects.ACCOUNT_CONV_STREAM,
        )
        assert readers, stream.name
    # The runtime credentials' bucket is read by `midcall up` (setup), for its nats-server.
    services = [permissions(role) for role in (*SERVICES, Role.SETUP)]
    for bucket in jetstream.BUCKETS:
        info = f"{JS_API}.STREAM.INFO.KV_{bucket.bucket}"
        assert any(allowed(p.publish, f"$KV.{bucket.bucket}.k") for p in services), bucket
        assert sum(allowed(p.publish, info) for p in services) >= 2, bucket


def test_only_setup_creates_or_changes_streams() -> None:
    for role in Role:
        for operation in ("CREATE", "UPDATE", "DELETE"):
            subject = f"{JS_API}.STREAM.{operation}.{subjects.CALLS_STREAM}"
            expected = role == Role.SETUP and operation == "CREATE"
            assert allowed(permissions(role).publish, subject) == expected, (role, operation)


def test_a_runtime_is_granted_the_contract_only() -> None:
    granted = permissions(Role.RUNTIME)
    assert allowed(granted.publish, subjects.calls(CONV))
    assert allowed(granted.publish, subjects.ended(CONV))
    assert allowed(granted.subscribe, subjects.conversation(CONV))
    for subject in (
        subjects.execute(CONV),
        subjects.executed(CONV),
        subjects.result(CONV),
        subjects.pending(CONV),
        subjects.usage("acme"),
        subjects.runs(CONV),
        subjects.replay(CONV),
        subjects.timer(CONV, "k"),
        subjects.dead("calls"),
        subjects.ready("dispatcher"),
        f"$KV.{subjects.CALL_CLAIMS_BUCKET}.k",
        f"{JS_API}.CONSUMER.MSG.NEXT.{subjects.ENDED_STREAM}.{ENDED.name}",
    ):
        assert not allowed(granted.publish, subject), subject
    assert not allowed(granted.subscribe, f"$KV.{subjects.CATALOG_BUCKET}.k")
    # No service keeps a durable on MIDCALL_CONV, so a runtime may read it with consumers
    # of its own (under the imported domain); none may go beside billing's durable on
    # MIDCALL_ENDED.
    assert not stream_has_durables(subjects.CONV_STREAM)
    domain_api = f"$JS.{RUNTIME_JS_DOMAIN}.API"
    assert allowed(granted.publish, f"{domain_api}.CONSUMER.CREATE.{subjects.CONV_STREAM}")
    for api in (JS_API, domain_api):
        assert not allowed(granted.publish, f"{api}.CONSUMER.CREATE.{subjects.ENDED_STREAM}")


def test_credentials_are_made_once_kept_private_and_completed(tmp_path: Path) -> None:
    first = load_or_create_credentials(tmp_path)
    path = tmp_path / CREDENTIALS_FILE
    assert set(first) == set(Role)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_credentials(tmp_path) == first  # kept across restarts
    # A role added since, or a copy come back readable by others: completed, made private.
    stored = json.loads(path.read_text())
    del stored[Role.OPS.value]
    path.write_text(json.dumps(stored))
    path.chmod(0o644)
    again = load_or_create_credentials(tmp_path)
    assert {r: p for r, p in again.items() if r != Role.OPS} == {
        r: p for r, p in first.items() if r != Role.OPS
    }
    assert again[Role.OPS] != first[Role.OPS]
    assert read_credentials(path) == again
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# --- the runtime: refused ---------------------------------------------------------------


async def test_anonymous_clients_are_refused(secured: Secured) -> None:
    with pytest.raises((nats.errors.Error, OSError)):
        await nats.connect(secured.url, allow_reconnect=False)


async def test_a_runtime_cannot_publish_what_services_produce(secured: Secured) -> None:
    runtime = await secured.connect(Role.RUNTIME)
    refusals = {
        subjects.execute(CONV): work_item({"url": "https://evil.example/"}).model_dump_json(),
        subjects.executed(CONV): "{}",
        subjects.result(CONV): result("forged").model_dump_json(),
        subjects.pending(CONV): "{}",
        subjects.usage("acme"): usage(CALL).model_dump_json(),
        subjects.runs(CONV): "{}",
        subjects.replay(CONV): "{}",
        subjects.timer(CONV, "k"): "{}",
        subjects.dead("calls"): "{}",
        f"$KV.{subjects.CALL_CLAIMS_BUCKET}.k": "accepted",
    }
    await asyncio.gather(
        *(refused_publish(runtime, s, body.encode()) for s, body in refusals.items())
    )
    root = await secured.root()
    for stream in (subjects.WORK_STREAM, subjects.USAGE_STREAM, subjects.OPS_STREAM):
        assert (await root.stream_info(stream)).state.messages == 0


async def test_a_runtime_cannot_read_the_buckets(secured: Secured) -> None:
    runtime = await secured.connect(Role.RUNTIME)

    async def refused_request(request: Awaitable[object], subject: str) -> None:
        with pytest.raises(nats.errors.TimeoutError):
            await request
        await runtime.violations.expect("publish", subject)

    js = runtime.impatient_js
    refusals = []
    for bucket in (
        subjects.CATALOG_BUCKET,
        subjects.CALL_CLAIMS_BUCKET,
        subjects.API_KEYS_BUCKET,
        subjects.SECRETS_BUCKET,
    ):
        stream = f"KV_{bucket}"
        refusals += [
            refused_request(js.key_value(bucket), f"{JS_API}.STREAM.INFO.{stream}"),
            refused_request(
                js.get_msg(stream, subject=f"$KV.{bucket}.k"), f"{JS_API}.STREAM.MSG.GET.{stream}"
            ),
        ]
    await asyncio.gather(*refusals)
    # Nor hear a bucket's writes go by, nor anyone's answers to a get.
    for subject in (
        f"$KV.{subjects.CALL_CLAIMS_BUCKET}.>",
        "_INBOX.>",
        f"{inbox_prefix(Role.DISPATCHER)}.>",
    ):
        await runtime.nc.subscribe(subject)
        await runtime.violations.expect("subscription", subject)


async def test_a_runtime_cannot_pull_nor_touch_the_durables(secured: Secured) -> None:
    runtime = await secured.connect(Role.RUNTIME)
    for subject in (
        f"{JS_API}.CONSUMER.MSG.NEXT.{ENDED.stream}.{ENDED.name}",
        f"{JS_API}.CONSUMER.CREATE.{ENDED.stream}",
        f"{JS_API}.CONSUMER.CREATE.{ENDED.stream}.{ENDED.name}",
        f"{JS_API}.CONSUMER.DURABLE.CREATE.{ENDED.stream}.{ENDED.name}",
        f"{JS_API}.CONSUMER.DELETE.{ENDED.stream}.{ENDED.name}",
        f"{JS_API}.STREAM.PURGE.{subjects.CONV_STREAM}",
        f"{JS_API}.STREAM.DELETE.{subjects.CALLS_STREAM}",
    ):
        await runtime.nc.publish(subject, b"{}", reply=runtime.nc.new_inbox())
        await runtime.violations.expect("publish", subject)


# --- the runtime: allowed ---------------------------------------------------------------


async def test_a_runtime_calls_ends_and_hears_its_conversation(secured: Secured) -> None:
    conn = await secured.connect(Role.RUNTIME)
    runtime = Runtime(conn.nc)
    await runtime.listen(CONV)
    ack = await conn.js.publish(subjects.calls(CONV), tool_call().model_dump_json().encode())
    assert ack.stream == subjects.CALLS_STREAM
    injector = await secured.connect(Role.RESULT_INJECTOR)
    await Publisher(injector.nc.jetstream()).result(result(), SHARED)
    assert (await runtime.wait_for(CONV, "result", CALL))["result"] == "real"
    await runtime.end(CONV)  # a JetStream publish: it waits for its PubAck
    await runtime.wait_for(CONV, "ended", "")
    await conn.clean()
    await injector.clean()


async def test_a_forged_result_cannot_displace_the_real_one(secured: Secured) -> None:
    conn = await secured.connect(Role.RUNTIME)
    runtime = Runtime(conn.nc)
    await runtime.listen(CONV)
    # First, with the very dedupe id the injector will use.
    dedupe = msg_id(CONV, CALL, "result")
    forged = result("forged").model_dump_json().encode()
    await refused_publish(conn, subjects.result(CONV), forged, dedupe)
    injector = await secured.connect(Role.RESULT_INJECTOR)
    ack = await injector.js.publish(
        subjects.result(CONV), result().model_dump_json().encode(), headers={"Nats-Msg-Id": dedupe}
    )
    assert not ack.duplicate
    assert (await runtime.wait_for(CONV, "result", CALL))["result"] == "real"
    kept = await stored(await secured.root(), subjects.CONV_STREAM, subjects.result(CONV))
    assert kept is not None
    assert json.loads(kept)["result"] == "real"


async def test_a_runtime_cannot_pre_empt_a_result_through_its_ended_events(
    secured: Secured,
) -> None:
    runtime = await secured.connect(Role.RUNTIME)
    dedupe = msg_id(CONV, CALL, "result")
    ended = ConversationEnded(conversation_id=CONV).model_dump_json().encode()
    await runtime.js.publish(subjects.ended(CONV), ended, headers={"Nats-Msg-Id": dedupe})
    injector = await secured.connect(Role.RESULT_INJECTOR)
    ack = await injector.js.publish(
        subjects.result(CONV), result().model_dump_json().encode(), headers={"Nats-Msg-Id": dedupe}
    )
    assert not ack.duplicate


async def test_a_runtime_cannot_have_answers_stored_where_it_may_not_publish(
    secured: Secured,
) -> None:
    """A request's answer goes to the reply subject its requester names; a runtime's
    names one in the runtimes' account, where no stream stores anything."""
    root = (await secured.connect_as(ROOT, "_INBOX")).nc
    claims = await root.subscribe(f"$KV.{subjects.CALL_CLAIMS_BUCKET}.>")
    work = await root.subscribe(subjects.ALL_EXEC)
    runtime = await secured.connect(Role.RUNTIME)
    # The PubAck of a call would otherwise land in the claims bucket as the call's claim,
    # and a consumer create's answer on the executors' work subject.
    claim = f"$KV.{subjects.CALL_CLAIMS_BUCKET}.{run_key(CONV, CALL, 1)}"
    create = f"$JS.{RUNTIME_JS_DOMAIN}.API.CONSUMER.CREATE.{subjects.CONV_STREAM}"
    await runtime.nc.publish(subjects.calls(CONV), b"{}", reply=claim)
    await runtime.nc.publish(create, b"{}", reply=subjects.execute(CONV))
    # The same requests again, answered to the runtime's inbox: answered after the first.
    acked = await runtime.nc.request(subjects.calls(CONV), b"{}", timeout=SETTLE_S)
    assert json.loads(acked.data)["seq"] == 2  # the first call was stored, and acked
    refused = await runtime.nc.request(create, b"{}", timeout=SETTLE_S)
    assert "error" in json.loads(refused.data)
    await root.flush()
    for subscription in (claims, work):
        assert subscription.pending_msgs == 0
    js = await secured.root()
    assert (await js.stream_info(f"KV_{subjects.CALL_CLAIMS_BUCKET}")).state.messages == 0
    assert (await js.stream_info(subjects.WORK_STREAM)).state.messages == 0
    await runtime.clean()


async def test_a_runtimes_consumer_cannot_store_events_in_another_stream(
    secured: Secured,
) -> None:
    """A consumer's deliver subject is its creator's choice, in Midcall's account; stored
    conversation events carry ``Nats-Expected-Stream``, so no other stream takes them."""
    injector = await secured.connect(Role.RESULT_INJECTOR)
    await Publisher(injector.nc.jetstream()).result(result(), SHARED)
    root = (await secured.connect_as(ROOT, "_INBOX")).nc
    claim = f"$KV.{subjects.CALL_CLAIMS_BUCKET}.{run_key(CONV, CALL, 1)}"
    delivered = await root.subscribe(claim)  # someone listening: the consumer delivers
    runtime = await secured.connect(Role.RUNTIME)
    config = ConsumerConfig(deliver_subject=claim, ack_policy=AckPolicy.NONE)
    request = {"stream_name": subjects.CONV_STREAM, "config": config.as_dict()}
    create = f"$JS.{RUNTIME_JS_DOMAIN}.API.CONSUMER.CREATE.{subjects.CONV_STREAM}"
    answer = await runtime.nc.request(create, json.dumps(request).encode(), timeout=SETTLE_S)
    assert "error" not in json.loads(answer.data)
    message = await delivered.next_msg(timeout=SETTLE_S)
    assert json.loads(message.data)["result"] == "real"
    assert message.headers is not None
    assert message.headers["Nats-Expected-Stream"] == subjects.CONV_STREAM
    js = await secured.root()
    assert (await js.stream_info(f"KV_{subjects.CALL_CLAIMS_BUCKET}")).state.messages == 0
    await runtime.clean()


# --- why the runtime has no pull, and no consumers beside a durable ---------------------


async def test_a_pull_delivers_to_any_reply_subject_with_its_dedupe_id(secured: Secured) -> None:
    """What a runtime allowed to pull could do: pre-empt the dispatcher's work item."""
    runtime = await secured.connect_as(PULLING_RUNTIME)
    dedupe = msg_id(CONV, CALL, "exec")
    await runtime.js.publish(subjects.ended(CONV), b"{}", headers={"Nats-Msg-Id": dedupe})
    config = ConsumerConfig(filter_subject=subjects.ended(CONV), ack_policy=AckPolicy.NONE)
    consumer = await runtime.js.add_consumer(subjects.ENDED_STREAM, config)
    next_subject = f"{JS_API}.CONSUMER.MSG.NEXT.{subjects.ENDED_STREAM}.{consumer.name}"
    await runtime.nc.publish(next_subject, b'{"batch": 1}', reply=subjects.execute(CONV))
    root = await secured.root()

    async def landed() -> bool:
        return (await root.stream_info(subjects.WORK_STREAM)).state.messages > 0

    await eventually(landed)
    dispatcher = await secured.connect(Role.DISPATCHER)
    body = work_item({"url": "https://api.example.com/"}).model_dump_json().encode()
    ack = await dispatcher.js.publish(subjects.execute(CONV), body, headers={"Nats-Msg-Id": dedupe})
    assert ack.duplicate  # the real work item was dropped


async def test_an_unnamed_consumer_create_still_rewrites_a_durable(secured: Secured) -> None:
    """What a runtime allowed to create consumers beside billing's durable could do."""
    billing = await secured.connect(Role.BILLING)
    durable = ConsumerConfig(
        durable_name=ENDED.name, filter_subject=ENDED.subject, ack_policy=AckPolicy.EXPLICIT
    )
    await billing.js.add_consumer(ENDED.stream, durable)
    runtime = await secured.connect_as(PUSHING_RUNTIME)
    hijack = ConsumerConfig(
        name=ENDED.name, filter_subject=subjects.ended("nobody"), ack_policy=AckPolicy.EXPLICIT
    )
    request = {"stream_name": ENDED.stream, "config": hijack.as_dict()}
    create = f"{JS_API}.CONSUMER.CREATE.{ENDED.stream}"
    await runtime.nc.request(create, json.dumps(request).encode(), timeout=SETTLE_S)
    info = await (await secured.root()).consumer_info(ENDED.stream, ENDED.name)
    assert info.config.filter_subject == subjects.ended("nobody")


async def test_a_runtime_catches_up_through_a_consumer_of_its_own(secured: Secured) -> None:
    """What the runtimes' account imports of MIDCALL_CONV's API, where no durable lives,
    is enough for an ordered consumer (created, delivered, flow-controlled)."""
    injector = await secured.connect(Role.RESULT_INJECTOR)
    await Publisher(injector.nc.jetstream()).result(result(), SHARED)  # before the runtime listens
    runtime = await secured.connect(Role.RUNTIME)
    inbox = Inbox()
    await runtime.nc.jetstream(domain=RUNTIME_JS_DOMAIN).subscribe(
        subjects.conversation(CONV),
        stream=subjects.CONV_STREAM,
        ordered_consumer=True,
        cb=inbox.handle,
    )
    message = await inbox.next()
    assert message.subject == subjects.result(CONV)
    assert json.loads(message.data)["result"] == "real"
    await runtime.clean()


async def test_a_shared_runtimes_consumer_cannot_reach_an_accounts_own_events(
    secured: Secured,
) -> None:
    """An account's runtimes' events are stored out of reach of the consumers the shared
    runtime user may create (on MIDCALL_CONV, with any filter it likes)."""
    injector = Publisher((await secured.connect(Role.RESULT_INJECTOR)).nc.jetstream())
    await injector.result(result("acme's own"), TENANT)
    await injector.result(result("shared"), SHARED)
    runtime = await secured.connect(Role.RUNTIME)
    inbox = Inbox()

    await runtime.nc.jetstream(domain=RUNTIME_JS_DOMAIN).subscribe(
        f"{subjects.PREFIX}.conv.>",
        stream=subjects.CONV_STREAM,
        ordered_consumer=True,
        cb=inbox.handle,
    )
    first = await inbox.next()

    assert (first.subject, json.loads(first.data)["result"]) == (subjects.result(CONV), "shared")
    root = await secured.root()
    kept = await root.stream_info(subjects.ACCOUNT_CONV_STREAM, subjects_filter=">")
    assert kept.state.subjects == {subjects.result(CONV, "acme"): 1}
    await runtime.clean()


# --- each service can do its own work ---------------------------------------------------


async def test_the_dispatcher_does_its_work(secured: Secured) -> None:
    registry = await secured.connect(Role.REGISTRY)
    writer = await CatalogWriter.open(registry.nc.jetstream())
    await writer.put_agent(AgentEntry(agent_id="a", account_id="acme"))
    await writer.put_tool("a", tool())
    conn = await secured.connect(Role.DISPATCHER)
    nc, js = conn.nc, conn.nc.jetstream()
    directory = Directory()
    await directory.follow(js)
    assert directory.account_of("a") == "acme"
    claims = await CallMarks.of(nc)
    assert await claims.claim(CONV, CALL, "1")
    assert not await claims.claim(CONV, CALL, "2")  # the create reads the key it found
    assert await claims.claim(CONV, CALL, "1")  # its own claim, tried again
    publisher, calls, replays = Publisher(js), Inbox(), Inbox()

    async def give_up(message: Msg, failure: Exception) -> None:
        raise AssertionError(failure)

    consumers = [
        WorkConsumer(nc, DISPATCH, calls.handle, concurrency=4, give_up=give_up),
        WorkConsumer(nc, REPLAYS, replays.handle, concurrency=4, give_up=give_up),
    ]
    for consumer in consumers:
        await consumer.start()
    try:
        runtime = await secured.connect(Role.RUNTIME)
        await Runtime(runtime.nc).call(tool_call().model_dump(mode="json"))
        replay = ReplayRequest(call=tool_call(), attempt=2)
        await Publisher(registry.nc.jetstream()).event(
            replay, subjects.replay(CONV), subjects.OPS_STREAM, msg_id(CONV, CALL, "replay", 2)
        )
        assert (await calls.next()).subject == subjects.calls(CONV)
        assert (await replays.next()).subject == subjects.replay(CONV)
        await publisher.pending(
            ToolCallPending(call_id=CALL, conversation_id=CONV, tool="T"), TENANT
        )
        await publisher.result(result("refused"), SHARED)
        await publisher.result(result("refused"), TENANT)
        work = work_item({"url": "https://api.example.com/"}).model_dump_json().encode()
        await publisher.raw(work, subjects.execute(CONV), subjects.WORK_STREAM, {})
        later = datetime.now(UTC) + timedelta(seconds=60)
        await DeadlineTimers(nc).arm(CONV, run_key(CONV, CALL, 1), later, work)
        await publisher.run(CallRun(call=tool_call(), result=result("refused")))
        for stage in ("calls", "replay"):
            await DeadLetters(publisher, stage).put(Msg(nc, subject=subjects.calls(CONV)), "x")
        root = await secured.root()
        await settled(root, DISPATCH)
        await settled(root, REPLAYS)
        await conn.clean()
    finally:
        for consumer in consumers:
            await consumer.stop()
        await directory.stop()


async def test_the_executor_does_its_work(secured: Secured) -> None:
    conn = await secured.connect(Role.HTTP_EXECUTOR)
    nc, js = conn.nc, conn.nc.jetstream()
    marks = await CallMarks.of(nc)
    await marks.mark(CONV, CALL, Mark.EXECUTED)
    assert await marks.has(CONV, CALL, Mark.EXECUTED)
    outcome = ExecutionOutcome(request=work_item({"url": "https://api.example.com/"}))
    await Publisher(js).event(
        outcome, subjects.executed(CONV), subjects.WORK_STREAM, msg_id(CONV, CALL, "executed")
    )
    await DeadLetters(Publisher(js), "exec").put(Msg(nc, subject=subjects.execute(CONV)), "x")
    # The max-deliveries backstop, end to end: one delivery, given up, deleted from the queue.
    given_up = Inbox()

    async def retry_later(message: Msg) -> None:
        raise Retry(0.01, "the API is down")

    async def give_up(message: Msg, failure: Exception) -> None:
        await given_up.handle(message)

    once = Durable(EXECUTE.stream, EXECUTE.subject, EXECUTE.name, max_deliver=1)
    consumer = WorkConsumer(nc, once, retry_later, concurrency=4, give_up=give_up)
    await consumer.start()
    try:
        dispatcher = await secured.connect(Role.DISPATCHER)
        work = work_item({"url": "https://api.example.com/"}).model_dump_json().encode()
        await dispatcher.js.publish(subjects.execute(CONV), work)
        assert (await given_up.next()).data == work
        root = await secured.root()

        async def deleted() -> bool:
            info = await root.stream_info(subjects.WORK_STREAM, subjects_filter=subjects.ALL_EXEC)
            return not info.state.subjects

        await eventually(deleted)
        await conn.clean()
    finally:
        await consumer.stop()


async def test_the_code_executor_does_its_work(secured: Secured) -> None:
    conn = await secured.connect(Role.CODE_EXECUTOR)
    nc, js = conn.nc, conn.nc.jetstream()
    marks = await CallMarks.of(nc)
    await marks.mark(CONV, CALL, Mark.EXECUTED)
    variables = ConversationVariables(await js.key_value(subjects.CONVERSATIONS_BUCKET))
    assert await variables.get("acme", CONV) == {}
    outcome = ExecutionOutcome(request=work_item({"url": "https://api.example.com/"}))
    await Publisher(js).event(
        outcome, subjects.executed(CONV), subjects.WORK_STREAM, msg_id(CONV, CALL, "ran")
    )
    await DeadLetters(Publisher(js), "code").put(Msg(nc, subject=subjects.execute(CONV)), "x")

    async def answer(message: Msg) -> None:
        await message.respond(b'{"available": true, "reason": null}')

    await nc.subscribe(subjects.SANDBOX_STATUS, cb=answer)
    registry = await secured.connect(Role.REGISTRY)
    asked = await registry.nc.request(subjects.SANDBOX_STATUS, b"", timeout=5)
    assert asked.data == b'{"available": true, "reason": null}'
    received = Inbox()
    consumer = WorkConsumer(nc, RUN_CODE, received.handle, concurrency=4)
    await consumer.start()
    try:
        dispatcher = await secured.connect(Role.DISPATCHER)
        work = work_item({"url": "https://api.example.com/"}).model_dump_json().encode()
        await dispatcher.js.publish(subjects.execute(CONV, "python"), work)
        assert (await received.next()).data == work
        await conn.clean()
    finally:
        await consumer.stop()


async def test_the_executor_hears_ends_through_its_broker(secured: Secured) -> None:
    """FastStream's connection on the role's user and inbox: the readiness, and the core
    subscription the executors take on it."""
    role = Role.HTTP_EXECUTOR
    broker = NatsBroker(
        secured.url,
        security=NatsUserPassword(role.value, secured.passwords[role]),
        inbox_prefix=inbox_prefix(role),
        max_reconnect_attempts=0,
    )
    ends = Inbox()
    setup = await secured.connect(Role.SETUP)
    ready = await setup.nc.subscribe(subjects.ready("*"))
    await broker.start()
    try:
        await broker.connection.subscribe(subjects.ALL_ENDED, cb=ends.handle)
        await broker.publish(role.value, subjects.ready(role.value))
        assert (await ready.next_msg(timeout=SETTLE_S)).data == role.value.encode()
        await Runtime((await secured.connect(Role.RUNTIME)).nc).end(CONV)
        assert json.loads((await ends.next()).data)["conversation_id"] == CONV
    finally:
        await broker.stop()
    await setup.clean()


async def test_the_injector_does_its_work(secured: Secured) -> None:
    conn = await secured.connect(Role.RESULT_INJECTOR)
    nc, js = conn.nc, conn.nc.jetstream()
    variables = ConversationVariables(await js.key_value(subjects.CONVERSATIONS_BUCKET))
    await variables.merge(SHARED, {"price": 12})
    assert await variables.get("acme", CONV) == {"price": 12}
    marks = await CallMarks.of(nc)
    assert await marks.claim_answer(CONV, CALL, 1, "outcome")
    assert not await marks.claim_answer(CONV, CALL, 1, "deadline")
    publisher = Publisher(js)
    await publisher.result(result(), SHARED)
    await publisher.result(result(), TENANT)
    await publisher.usage(usage(CALL, conversation_id=CONV))
    await publisher.run(CallRun(call=tool_call(), result=result()))
    for stage in ("executed", "deadline"):
        await DeadLetters(publisher, stage).put(Msg(nc, subject=subjects.executed(CONV)), "x")
    outcomes, deadlines = Inbox(), Inbox()
    consumers = [
        WorkConsumer(nc, INJECT, outcomes.handle, concurrency=4),
        WorkConsumer(nc, DEADLINES, deadlines.handle, concurrency=4),
    ]
    for consumer in consumers:
        await consumer.start()
    try:
        executor = await secured.connect(Role.HTTP_EXECUTOR)
        await executor.js.publish(subjects.executed(CONV), b"{}")
        assert (await outcomes.next()).subject == subjects.executed(CONV)
        dispatcher = await secured.connect(Role.DISPATCHER)
        timers = DeadlineTimers(dispatcher.nc)
        now = datetime.now(UTC)
        await timers.arm(CONV, "fires", now, b"due")  # fires within 250 ms
        await timers.arm(CONV, "answered", now + timedelta(seconds=60), b"not due")
        assert (await deadlines.next()).data == b"due"
        await DeadlineTimers(nc).disarm(CONV, "answered")
        root = await secured.root()

        async def disarmed() -> bool:
            filtered = subjects.timer(CONV, "answered")
            info = await root.stream_info(subjects.TIMERS_STREAM, subjects_filter=filtered)
            return not info.state.subjects

        await eventually(disarmed)
        await settled(root, INJECT)
        await settled(root, DEADLINES)
        await conn.clean()
    finally:
        for consumer in consumers:
            await consumer.stop()


async def test_the_registry_does_its_work(secured: Secured) -> None:
    conn = await secured.connect(Role.REGISTRY)
    nc, js = conn.nc, conn.nc.jetstream()
    writer = await CatalogWriter.open(js)
    await writer.put_tool("a", tool())
    await writer.put_tool("b", tool())
    await writer.sync([], [("a", tool())])  # stored keys, live or not; deletes b
    conversations = ConversationVariables(await js.key_value(subjects.CONVERSATIONS_BUCKET))
    assert await conversations.get("acme", CONV) == {}
    publisher = Publisher(js)
    replay = ReplayRequest(call=tool_call(), attempt=2)
    await publisher.event(
        replay, subjects.replay(CONV), subjects.OPS_STREAM, msg_id(CONV, CALL, "replay", 2)
    )
    # A dead letter goes again on the subject it first came on, whichever that was.
    for original in (subjects.execute(CONV), subjects.usage("acme"), subjects.ended(CONV)):
        await publisher.raw(b"{}", original, None, {"Nats-Msg-Id": f"replay/{original}/1"})
    runs, letters = Inbox(), Inbox()
    consumers = [
        BatchConsumer(nc, RUNS, runs.handle_batch, 8),
        BatchConsumer(nc, DEAD_LETTERS, letters.handle_batch, 8),
    ]
    for consumer in consumers:
        await consumer.start()
    try:
        injector = await secured.connect(Role.RESULT_INJECTOR)
        await Publisher(injector.nc.jetstream()).run(CallRun(call=tool_call(), result=result()))
        assert (await runs.next()).subject == subjects.runs(CONV)
        billing = await secured.connect(Role.BILLING)
        stray = Msg(billing.nc, subject=subjects.usage("acme"))
        await DeadLetters(Publisher(billing.nc.jetstream()), "billing").put(stray, "x")
        assert (await letters.next()).subject == subjects.dead("billing")
        root = await secured.root()
        await settled(root, RUNS)
        await settled(root, DEAD_LETTERS)
        assert await stored(root, f"KV_{subjects.CATALOG_BUCKET}", "$KV.midcall_catalog.tools.a.T")
        await conn.clean()
    finally:
        for consumer in consumers:
            await consumer.stop()


async def test_billing_does_its_work(secured: Secured) -> None:
    conn = await secured.connect(Role.BILLING)
    nc = conn.nc
    records, ends = Inbox(), Inbox()
    consumers: list[BatchConsumer | WorkConsumer] = [
        BatchConsumer(nc, USAGE, records.handle_batch, 8),
        WorkConsumer(nc, ENDED, ends.handle, concurrency=4),
    ]
    for consumer in consumers:
        await consumer.start()
    try:
        injector = await secured.connect(Role.RESULT_INJECTOR)
        await Publisher(injector.nc.jetstream()).usage(usage(CALL, conversation_id=CONV))
        record = UsageRecord.model_validate_json((await records.next()).data)
        assert record.call_id == CALL
        await Runtime((await secured.connect(Role.RUNTIME)).nc).end(CONV)
        assert (await ends.next()).subject == subjects.ended(CONV)
        await DeadLetters(Publisher(nc.jetstream()), "billing").put(
            Msg(nc, subject=subjects.ended(CONV)), "x"
        )
        root = await secured.root()
        await settled(root, USAGE)
        await settled(root, ENDED)
        await conn.clean()
    finally:
        for consumer in consumers:
            await consumer.stop()


async def test_ops_replay_and_read_dead_letters(secured: Secured) -> None:
    executor = await secured.connect(Role.HTTP_EXECUTOR)
    letters = DeadLetters(Publisher(executor.nc.jetstream()), "exec")
    await letters.put(Msg(executor.nc, subject=subjects.execute(CONV), data=b"?"), "x")
    ops = await secured.connect(Role.OPS)
    replay = ReplayRequest(call=tool_call(), attempt=2).model_dump_json().encode()
    ack = await ops.js.publish(subjects.replay(CONV), replay)
    assert ack.stream == subjects.OPS_STREAM
    for stream in jetstream.STREAMS:
        assert stream.name is not None
        await ops.js.stream_info(stream.name)
    letter = await ops.js.get_msg(subjects.DEAD_STREAM, seq=1)
    assert letter.data == b"?"
    await ops.clean()
    await refused_publish(ops, subjects.execute(CONV), b"{}")
