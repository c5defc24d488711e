"""Who may do what on NATS: one user per role, each allowed only its own subjects.

nats-server checks every publish and subscribe against the user's allow
lists; anything not listed is refused (a publish is dropped with a
``Permissions Violation``, so a JetStream request gets no answer and times
out). JetStream is driven by publishing on ``$JS.API.*`` subjects and acking
on the reply subjects of delivered messages, so each role is also given the
API subjects of exactly the streams, consumers and buckets its code touches:

- a durable pull consumer (``shared.fabric.pull_flow``): create it, pull from it,
  ack on ``$JS.ACK.<stream>.<durable>.>``; with the max-deliveries backstop
  (``shared.fabric.exhausted``) also its advisory, and reading (and, from a
  work-queue stream, deleting) the message it names;
- a JetStream publish (``shared.fabric.messaging.Publisher``): the subject, with
  the PubAck coming back to the role's own inbox;
- a KV bucket (``shared.fabric.call_marks``, ``shared.fabric.conversations``, the
  registry's catalog writer, the dispatcher's watch): its stream's info,
  gets, puts on ``$KV.<bucket>.>``, or an ordered push consumer for a watch.

Each role has its own inbox prefix (``_INBOX_<role>``) and may subscribe
only under it, so no one can listen to another role's replies (KV values,
PubAcks, pulled messages). Nothing here answers requests: no role needs
``allow_responses``.

Streams and buckets are created only by ``Role.SETUP`` (``midcall up``'s
supervisor, or a one-shot setup step): services may read the info of the
streams they use, never create, update or delete one.

Runtimes live in an account of their own (``Account.RUNTIMES``); everything
else lives in Midcall's (``Account.MIDCALL``), where JetStream is. The
runtimes' account sees only what Midcall's exports to it (``runtime_shares()``):
calls and ends go in as *service* imports, pending and result events come out
as *stream* imports. An account boundary is what subject permissions cannot
give inside one account: nats-server sends the answer to a request (a PubAck,
an API response) to whatever reply subject the requester names, unchecked, so
a runtime in Midcall's account could have a server-made PubAck stored as a KV
entry (a call's claim, suppressing the call). Across a service import the
reply subject is the server's own (``_R_.<random>``), mapped back into the
runtimes' account, where there is no stream to store anything.

A runtime may also read ``MIDCALL_CONV`` through consumers of its own: the
one JetStream API subject it needs, consumer create on that stream, is
imported under the JetStream domain ``midcall`` (nats-py:
``nc.jetstream(domain="midcall")``), because an account without JetStream
answers ``$JS.API`` itself ("JetStream not enabled"). Its consumers deliver
to its own inbox, exported back to it. No service keeps a durable on
``MIDCALL_CONV``: a create that names a consumer may rewrite any consumer of
the stream (billing's durable for ``ended`` lives on ``MIDCALL_ENDED``, out of
reach). A deliver subject is the requester's choice, in Midcall's account,
and nats-server does not check it either; but a push consumer delivers only
where a client listens (nats-server's own subscriptions, its API among them,
do not count, measured on 2.15.1), the clients there listen on their random
inboxes, on ``ended`` (which runtimes may publish anyway) and on readiness at
start, and stored conversation events carry ``Nats-Expected-Stream:
MIDCALL_CONV``, so no other stream stores them.
"""

import json
import re
import secrets
import string
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Literal, TypedDict

from nats.js.api import RetentionPolicy

from shared.contract import subjects
from shared.fabric import jetstream
from shared.fabric.elections import STREAM_ELECTED, consumer_elected
from shared.security.data_dir import private_file, write_private

CREDENTIALS_FILE = "nats-credentials.json"
PASSWORD_LENGTH = 43  # a letter, then 42 letters or digits: over 250 random bits
PASSWORD_ENV_PREFIX = "MIDCALL_NATS_PASSWORD_"


class Role(StrEnum):
    """One NATS user each; the value is the user name (and names the inbox prefix)."""

    SETUP = "setup"  # creates streams and buckets; `midcall up` waits for readiness
    RUNTIME = "runtime"  # a voice runtime: the public contract only
    DISPATCHER = "dispatcher"
    HTTP_EXECUTOR = "http-executor"
    CODE_EXECUTOR = "code-executor"
    RESULT_INJECTOR = "result-injector"
    REGISTRY = "registry"
    BILLING = "billing"
    OPS = "ops"  # an operator's tools: replays, and reading dead letters
    # Has nats-server reload its configuration (runtime credentials' accounts changed).
    RELOAD = "reload"


class Account(StrEnum):
    """The NATS accounts of a Midcall server; the value is the account's name."""

    MIDCALL = "MIDCALL"  # services, setup, ops: JetStream, streams and buckets live here
    RUNTIMES = "RUNTIMES"  # voice runtimes: only what Midcall's account exports to them
    SYSTEM = "SYS"  # nats-server's own (system_account): the reload role alone signs in here


def account(role: Role) -> Account:
    return {Role.RUNTIME: Account.RUNTIMES, Role.RELOAD: Account.SYSTEM}.get(role, Account.MIDCALL)


# The JetStream domain under which runtimes reach the one JetStream API subject they
# may use: ``$JS.midcall.API.CONSUMER.CREATE.MIDCALL_CONV``.
RUNTIME_JS_DOMAIN = "midcall"


@dataclass(frozen=True)
class Permissions:
    """Allow lists for one user; everything else is denied by nats-server."""

    publish: tuple[str, ...] = ()
    subscribe: tuple[str, ...] = ()
    # Publishing on the reply subject of a request received; no role answers requests.
    allow_responses: bool = False

    def __add__(self, other: "Permissions") -> "Permissions":
        return Permissions(
            publish=_unique(self.publish + other.publish),
            subscribe=_unique(self.subscribe + other.subscribe),
            allow_responses=self.allow_responses or other.allow_responses,
        )


@dataclass(frozen=True)
class DurableGrant:
    """A durable pull consumer a role reads (names as in the services' ``Durable``)."""

    stream: str
    name: str
    filter_subject: str
    # Whether its service watches the max-deliveries advisory (``shared.fabric.exhausted``):
    # true for the durables built with ``max_deliver`` and a ``give_up``.
    exhausted: bool = False
    also: tuple[str, ...] = ()  # more subjects it takes (the ``Durable``'s ``also``)


# The durables of each service; tests/test_nats_permissions.py checks these against
# the services' own ``Durable`` definitions, so the two cannot drift apart.
DURABLES: Mapping[Role, tuple[DurableGrant, ...]] = {
    Role.DISPATCHER: (
        DurableGrant(subjects.CALLS_STREAM, "midcall-dispatcher", subjects.ALL_CALLS, True),
        DurableGrant(subjects.OPS_STREAM, "midcall-dispatcher-replays", subjects.ALL_REPLAYS, True),
    ),
    Role.HTTP_EXECUTOR: (
        DurableGrant(subjects.WORK_STREAM, "midcall-http-executor", subjects.ALL_EXEC, True),
    ),
    Role.CODE_EXECUTOR: (
        DurableGrant(subjects.WORK_STREAM, "midcall-code-executor", subjects.ALL_CODE, True),
    ),
    Role.RESULT_INJECTOR: (
        DurableGrant(subjects.WORK_STREAM, "midcall-result-injector", subjects.ALL_EXECUTED, True),
        DurableGrant(subjects.TIMERS_STREAM, "midcall-deadlines", subjects.ALL_DEADLINES, True),
    ),
    Role.BILLING: (
        DurableGrant(subjects.USAGE_STREAM, "midcall-billing-usage", subjects.ALL_USAGE),
        DurableGrant(
            subjects.ENDED_STREAM,
            "midcall-billing-ended",
            subjects.ALL_ENDED,
            also=(subjects.ACCOUNT_ENDED,),
        ),
    ),
    Role.REGISTRY: (
        DurableGrant(subjects.OPS_STREAM, "midcall-registry-runs", subjects.ALL_RUNS),
        DurableGrant(subjects.DEAD_STREAM, "midcall-registry-dead-letters", subjects.ALL_DEAD),
    ),
}

# Roles that run as a service process and announce readiness on ``midcall.ready.<role>``.
SERVICES = frozenset(
    {
        Role.DISPATCHER,
        Role.HTTP_EXECUTOR,
        Role.CODE_EXECUTOR,
        Role.RESULT_INJECTOR,
        Role.REGISTRY,
        Role.BILLING,
    }
)


def inbox_prefix(role: Role) -> str:
    """The role's inbox prefix, for ``nats.connect(inbox_prefix=...)``.

    nats-py builds every reply subject from it (requests, JetStream publishes,
    KV gets, pull inboxes, push consumers' deliver subjects); one token of its
    own per role, so ``_INBOX_<role>.>`` covers exactly that role's inboxes.
    """
    return f"_INBOX_{role.value}"


def permissions(role: Role) -> Permissions:
    """The allow lists of ``role``: what its code publishes and subscribes, nothing else."""
    grants = _own_inbox(role) + _ROLE_GRANTS[role]()
    if role in SERVICES:
        # shared.process.service announces the service on core NATS once it serves; its
        # waits on a stream without a leader end at the election (shared.fabric.elections).
        grants += Permissions(publish=(subjects.ready(role.value),), subscribe=(STREAM_ELECTED,))
    for durable in DURABLES.get(role, ()):
        grants += _durable(durable)
    return grants


# --- building blocks -------------------------------------------------------------------

JS_API = "$JS.API"


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def _own_inbox(role: Role) -> Permissions:
    # Every answer to this role (PubAcks, API responses, KV values, pulled and
    # pushed messages) arrives under its inbox prefix; it cannot listen on others'.
    return Permissions(subscribe=(f"{inbox_prefix(role)}.>",))


def _publishes(*subject_patterns: str) -> Permissions:
    """Events published through JetStream: the subject; the PubAck comes to the inbox."""
    return Permissions(publish=subject_patterns)


def _stream_info(stream: str) -> Permissions:
    # js.stream_info / js.key_value read a stream's config and state; read-only.
    return Permissions(publish=(f"{JS_API}.STREAM.INFO.{stream}",))


def _work_queue(stream: str) -> bool:
    return any(
        s.name == stream and s.retention == RetentionPolicy.WORK_QUEUE for s in jetstream.STREAMS
    )


def _durable(durable: DurableGrant) -> Permissions:
    stream, name = durable.stream, durable.name
    grants = Permissions(
        publish=(
            # PullFlow creates (or updates) its durable: nats-py 2.16 sends a config with a
            # durable_name on the legacy subject; newer clients name it (with its filter).
            f"{JS_API}.CONSUMER.DURABLE.CREATE.{stream}.{name}",
            f"{JS_API}.CONSUMER.CREATE.{stream}.{name}",
            f"{JS_API}.CONSUMER.CREATE.{stream}.{name}.{durable.filter_subject}",
            # Pull requests; the messages come to the pull inbox.
            f"{JS_API}.CONSUMER.MSG.NEXT.{stream}.{name}",
            # Acks, naks and in-progress beats go to each message's reply subject.
            f"$JS.ACK.{stream}.{name}.>",
        ),
        # Its pull flow asks a new leader of the durable at once.
        subscribe=(consumer_elected(stream, name),),
    )
    if durable.exhausted:
        grants += _exhausted(durable)
    return grants


def _exhausted(durable: DurableGrant) -> Permissions:
    """shared.fabric.exhausted: the advisory, then the message it names, from its stream."""
    stream = durable.stream
    publish = [f"{JS_API}.STREAM.MSG.GET.{stream}", f"{JS_API}.STREAM.INFO.{stream}"]
    if _work_queue(stream):
        # From a work queue it is deleted once handed over, as an ack would have removed it.
        publish.append(f"{JS_API}.STREAM.MSG.DELETE.{stream}")
    advisory = f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.{durable.name}"
    return Permissions(publish=tuple(publish), subscribe=(advisory,))


def _kv_read(bucket: str) -> Permissions:
    stream = subjects.kv_stream(bucket)
    return _stream_info(stream) + Permissions(
        publish=(
            # KeyValue.get: the last message on $KV.<bucket>.<key>; which API depends on
            # the bucket's allow_direct (off for ours today; both, so turning it on is safe).
            f"{JS_API}.STREAM.MSG.GET.{stream}",
            f"{JS_API}.DIRECT.GET.{stream}",
            f"{JS_API}.DIRECT.GET.{stream}.>",
        )
    )


def _kv_write(bucket: str) -> Permissions:
    # put / create / update / delete are JetStream publishes on the key's subject.
    return Permissions(publish=(f"$KV.{bucket}.>",))


def _kv_watch(bucket: str) -> Permissions:
    """KeyValue.watchall: an ordered push consumer delivered to the role's inbox (a
    bucket's stream has no durables for the create subject to touch)."""
    stream = subjects.kv_stream(bucket)
    return (
        _stream_info(stream)
        + push_consumers(stream)
        # The watch reads its consumer's pending count once it starts.
        + Permissions(publish=(f"{JS_API}.CONSUMER.INFO.{stream}.*",))
    )


def _dead_letters(*stages: str) -> Permissions:
    # shared.fabric.messaging.DeadLetters: a service sets aside what it cannot read, per stage.
    return _publishes(*(subjects.dead(stage) for stage in stages))


# --- the roles -------------------------------------------------------------------------


def _setup() -> Permissions:
    """shared.fabric.jetstream.ensure (info, then create if missing) and readiness of services."""
    streams = [stream.name for stream in jetstream.STREAMS if stream.name is not None]
    streams += [subjects.kv_stream(bucket.bucket) for bucket in jetstream.BUCKETS]
    publish = [
        subject
        for stream in streams
        for subject in (f"{JS_API}.STREAM.INFO.{stream}", f"{JS_API}.STREAM.CREATE.{stream}")
    ]
    # The upgrades ensure makes to streams: MIDCALL_CONV gives ``ended`` away, and both
    # take each account's own runtimes' subjects.
    publish += [
        f"{JS_API}.STREAM.UPDATE.{stream}"
        for stream in (subjects.CONV_STREAM, subjects.ENDED_STREAM)
    ]
    # `midcall up` counts services as they announce themselves, and renders the runtime
    # credentials' accounts for its nats-server (shared.security.runtime_accounts).
    return Permissions(publish=tuple(publish), subscribe=(subjects.ready("*"),)) + _kv_watch(
        subjects.RUNTIME_CREDENTIALS_BUCKET
    )


def _runtime() -> Permissions:
    """The public contract: calls and ends in; everything about a conversation out.

    Granted inside the runtimes' account, where runtimes hear one another: no
    runtime may publish a pending or a result that other runtimes would take
    for the fabric's.
    """
    publish = [share.local for share in runtime_shares() if share.kind == "service"]
    # Core NATS: pending and result (imported), ended and cancel (from runtimes, in their
    # account).
    return Permissions(publish=tuple(publish), subscribe=(subjects.ALL_CONV,))


@dataclass(frozen=True)
class Share:
    """A subject Midcall's account exports to the runtimes' account, which imports it.

    A ``service`` carries what runtimes publish into Midcall's account (a reply
    comes back through the server's own reply subject); a ``stream`` carries
    what Midcall's account publishes out to runtimes.
    """

    kind: Literal["service", "stream"]
    subject: str  # in Midcall's account
    to: str = ""  # in the runtimes' account, when not the same subject

    @property
    def local(self) -> str:
        return self.to or self.subject


def runtime_shares() -> tuple[Share, ...]:
    """What the runtimes' account imports from Midcall's: the public contract."""
    shares = [
        # ToolCalls, through JetStream; one token: an account's own subjects have two.
        Share("service", subjects.SHARED_CALLS),
        Share("service", subjects.ALL_ENDED),  # the conversation is over
        Share("service", subjects.ALL_CANCELS),  # a call of it is cancelled
        Share("stream", subjects.ALL_PENDING),
        Share("stream", subjects.ALL_RESULTS),
        Share("stream", subjects.ALL_PROGRESS),
        # Not ``midcall.conv.>``: ends come from runtimes, who hear them in their own
        # account; importing them back would deliver each twice.
    ]
    # Catching up through MIDCALL_CONV with consumers of their own: withheld were a
    # service ever to keep a durable there (an unnamed create could rewrite it).
    if not stream_has_durables(subjects.CONV_STREAM):
        stream = subjects.CONV_STREAM
        create = f"CONSUMER.CREATE.{stream}"
        shares += [
            Share("service", f"{JS_API}.{create}", f"$JS.{RUNTIME_JS_DOMAIN}.API.{create}"),
            # Flow-control replies of its push consumers.
            Share("service", f"$JS.FC.{stream}.>"),
            # What its consumers deliver, to the inbox it named.
            Share("stream", f"{inbox_prefix(Role.RUNTIME)}.>"),
        ]
    return tuple(shares)


def push_consumers(stream: str) -> Permissions:
    """Reading ``stream`` through ephemeral push consumers delivered to the own inbox
    (nats-py's ``js.subscribe(..., stream=..., ordered_consumer=True)``; a KV watch).

    Safe only on a stream no service keeps a durable on: the unnamed create
    subject still takes a consumer ``name`` in its body, and with it creates *or
    updates* any consumer of the stream, durables included (nats-server 2.15.1
    turns billing's durable into an ephemeral with another filter).
    """
    return Permissions(
        publish=(
            f"{JS_API}.CONSUMER.CREATE.{stream}",
            # Flow-control replies of the push consumer.
            f"$JS.FC.{stream}.>",
        )
    )


def stream_has_durables(stream: str) -> bool:
    """Whether a service keeps a durable consumer on ``stream``."""
    return any(d.stream == stream for durables in DURABLES.values() for d in durables)


def _dispatcher() -> Permissions:
    return (
        _publishes(
            *subjects.WORK_SUBJECTS,  # work items for the executors, by the tool's kind
            # Pending, and a call refused is answered at once: to the shared runtime
            # user's subjects or an account's own.
            *jetstream.CONV_SUBJECTS,
            *jetstream.ACCOUNT_CONV_SUBJECTS,
            subjects.ALL_TIMERS,  # a deadline timer per call (shared.fabric.deadline_timers.arm)
            subjects.ALL_RUNS,  # refused calls ops may want to replay
        )
        + _dead_letters("calls", "replay")
        + _kv_watch(subjects.CATALOG_BUCKET)  # services.dispatcher.directory
        # CallMarks.claim: a create, which reads the key when it finds one.
        + _kv_read(subjects.CALL_CLAIMS_BUCKET)
        + _kv_write(subjects.CALL_CLAIMS_BUCKET)
    )


def _executor(stage: str) -> Permissions:
    """What either executor does with a work item around running it."""
    return (
        _publishes(subjects.ALL_EXECUTED)
        + _dead_letters(stage)
        # CallMarks.has / mark: was the call executed before its ack was lost.
        + _kv_read(subjects.CALL_CLAIMS_BUCKET)
        + _kv_write(subjects.CALL_CLAIMS_BUCKET)
        # Core NATS, every replica: a conversation's end cancels its calls in flight, a
        # cancel one of them.
        + Permissions(
            subscribe=(
                subjects.ALL_ENDED,
                subjects.ACCOUNT_ENDED,
                subjects.ALL_CANCELS,
                subjects.ACCOUNT_CANCELS,
            )
        )
        # The accounts' secrets, sealed; opened here only (secret_scope).
        + _kv_read(subjects.SECRETS_BUCKET)
    )


def _http_executor() -> Permissions:
    # The completions of calls whose API answered 202: watched and read, never written.
    return (
        _executor("exec")
        + _kv_watch(subjects.CALLBACKS_BUCKET)
        + _kv_read(subjects.CALLBACKS_BUCKET)
    )


def _code_executor() -> Permissions:
    return (
        _executor("code")
        # A function's ctx.variables: the conversation's, read only.
        + _kv_read(subjects.CONVERSATIONS_BUCKET)
        # Answers whether python tools can run here (the registry asks before accepting one).
        + Permissions(subscribe=(subjects.SANDBOX_STATUS,), allow_responses=True)
    )


def _result_injector() -> Permissions:
    return (
        _publishes(
            subjects.ALL_RESULTS,
            subjects.ACCOUNT_RESULTS,
            subjects.ALL_USAGE,
            subjects.ALL_RUNS,
            # DeadlineTimers.disarm: a purge of the call's schedule, fire and forget.
            f"{JS_API}.STREAM.PURGE.{subjects.TIMERS_STREAM}",
        )
        + _dead_letters("executed", "deadline")
        + _kv_read(subjects.CALL_CLAIMS_BUCKET)
        + _kv_write(subjects.CALL_CLAIMS_BUCKET)
        + _kv_read(subjects.CONVERSATIONS_BUCKET)  # ConversationVariables.merge: CAS
        + _kv_write(subjects.CONVERSATIONS_BUCKET)
    )


def _registry() -> Permissions:
    # A dead letter is replayed on the subject it first came on: any subject some
    # service consumes (the filters of every durable but the dead letters' own).
    originals = [
        subject
        for durables in DURABLES.values()
        for durable in durables
        if durable.stream != subjects.DEAD_STREAM
        for subject in (durable.filter_subject, *durable.also)
    ]
    return (
        _publishes(subjects.ALL_REPLAYS, *originals)
        + _kv_read(subjects.CATALOG_BUCKET)  # CatalogWriter: stored keys, live or deleted
        + _kv_write(subjects.CATALOG_BUCKET)
        + _kv_read(subjects.CONVERSATIONS_BUCKET)  # /v1/conversations/{id}/variables
        # Asks a code-executor whether python tools can run before accepting one.
        + Permissions(publish=(subjects.SANDBOX_STATUS,))
        # Account keys: mirrored from SQL (BucketMirror), and checked on each request (KeyRing).
        + _kv_read(subjects.API_KEYS_BUCKET)
        + _kv_write(subjects.API_KEYS_BUCKET)
        # Sealed account secrets, mirrored from SQL (BucketMirror).
        + _kv_read(subjects.SECRETS_BUCKET)
        + _kv_write(subjects.SECRETS_BUCKET)
        # Runtime credentials' digests, mirrored from SQL (BucketMirror).
        + _kv_read(subjects.RUNTIME_CREDENTIALS_BUCKET)
        + _kv_write(subjects.RUNTIME_CREDENTIALS_BUCKET)
        # A long-running call's API reports through the registry (callbacks_api): its
        # progress to the runtimes, its completion created once for the executor; a call
        # already answered (its marks) takes neither.
        + _publishes(subjects.ALL_PROGRESS, subjects.ACCOUNT_PROGRESS)
        + _kv_read(subjects.CALLBACKS_BUCKET)
        + _kv_write(subjects.CALLBACKS_BUCKET)
        + _kv_read(subjects.CALL_CLAIMS_BUCKET)
        # A call's stored events, for an account's runtime that missed them (stored_events):
        # asked through the account's import, read through ephemeral consumers.
        + Permissions(subscribe=(subjects.ACCOUNT_STORED,), allow_responses=True)
        + push_consumers(subjects.ACCOUNT_CONV_STREAM)
        + Permissions(publish=(f"{JS_API}.CONSUMER.INFO.{subjects.ACCOUNT_CONV_STREAM}.*",))
    )


def _billing() -> Permissions:
    # KeyRing: its REST API checks account keys (digests) in the bucket.
    return _dead_letters("billing") + _kv_read(subjects.API_KEYS_BUCKET)


def _ops() -> Permissions:
    """An operator's own tools (nats CLI with ``--inbox-prefix _INBOX_ops``): replay a
    failed call, read the dead letters, see every stream's and consumer's state."""
    return _publishes(subjects.ALL_REPLAYS) + Permissions(
        publish=(
            f"{JS_API}.INFO",
            f"{JS_API}.STREAM.NAMES",
            f"{JS_API}.STREAM.LIST",
            f"{JS_API}.STREAM.INFO.*",
            f"{JS_API}.CONSUMER.NAMES.*",
            f"{JS_API}.CONSUMER.LIST.*",
            f"{JS_API}.CONSUMER.INFO.*.*",
            f"{JS_API}.STREAM.MSG.GET.{subjects.DEAD_STREAM}",
        )
    )


def _reload() -> Permissions:
    """The system account's requests for a reload: which servers there are, and reload one
    (answered once it is done). Nothing else of the system account's."""
    return Permissions(publish=(f"{SYSTEM_REQUESTS}.PING.IDZ", f"{SYSTEM_REQUESTS}.*.RELOAD"))


SYSTEM_REQUESTS = "$SYS.REQ.SERVER"

_ROLE_GRANTS: Mapping[Role, Callable[[], Permissions]] = {
    Role.SETUP: _setup,
    Role.RUNTIME: _runtime,
    Role.DISPATCHER: _dispatcher,
    Role.HTTP_EXECUTOR: _http_executor,
    Role.CODE_EXECUTOR: _code_executor,
    Role.RESULT_INJECTOR: _result_injector,
    Role.REGISTRY: _registry,
    Role.BILLING: _billing,
    Role.OPS: _ops,
    Role.RELOAD: _reload,
}


# --- connecting ------------------------------------------------------------------------


class ConnectOptions(TypedDict):
    """Keyword arguments for ``nats.connect`` (FastStream: ``NatsUserPassword`` and
    ``inbox_prefix``)."""

    user: str
    password: str
    inbox_prefix: str


def connect_options(role: Role, password: str) -> ConnectOptions:
    return {"user": role.value, "password": password, "inbox_prefix": inbox_prefix(role)}


# --- the server's configuration --------------------------------------------------------


@dataclass(frozen=True)
class NatsUser:
    """One entry of an account's ``users`` list; ``password`` is as written in the
    config: a quoted string, or a ``$VARIABLE`` nats-server resolves from its
    environment."""

    name: str
    password: str
    permissions: Permissions
    account: Account = Account.MIDCALL


def role_user(role: Role, password: str) -> NatsUser:
    return NatsUser(role.value, password, permissions(role), account(role))


def render_authorization(passwords: Mapping[Role, str], include: str | None = None) -> str:
    """The ``accounts`` block of nats-server.conf: a user per role in ``passwords``
    (and the accounts in the file ``include``, see ``render_accounts``).

    Plain passwords, as the services read them from the credentials file
    anyway: the file must be readable by nats-server only (mode 0600).
    nats-server logs a warning about plaintext passwords at startup.
    """
    users = (role_user(role, json.dumps(password)) for role, password in passwords.items())
    return render_accounts(users, include)


def render_authorization_from_env(
    roles: Iterable[Role] = tuple(Role), include: str | None = None
) -> str:
    """The same block with each password read by nats-server from its environment
    (``$MIDCALL_NATS_PASSWORD_<ROLE>``), for a config file kept in the repository.

    The references stay unquoted (quoted, one is the literal text ``$MIDCALL_...``),
    so nats-server parses each value as config: it must keep to ``ENV_PASSWORD_RULE``
    (``check_env_passwords``).
    """
    return render_accounts((role_user(role, f"${password_env(role)}") for role in roles), include)


def password_env(role: Role) -> str:
    """The environment variable holding ``role``'s password (e.g. for compose)."""
    return PASSWORD_ENV_PREFIX + role.value.upper().replace("-", "_")


def render_accounts(users: Iterable[NatsUser], include: str | None = None) -> str:
    """An ``accounts`` block with exactly these users, each in its account; no other
    may connect. Midcall's account has JetStream and exports ``runtime_shares()`` to
    the runtimes' account only; the runtimes' account imports them.

    ``include``: a file (beside the config) of further accounts, those of runtime
    credentials (``shared.security.runtime_accounts``), which import each account's own
    subjects from the exports ``ACCOUNT_SHARES``.
    """
    members: dict[Account, list[NatsUser]] = {name: [] for name in Account}
    for user in users:
        members[user.account].append(user)
    shares = runtime_shares()
    exports = [
        f"{{ {share.kind}: {json.dumps(share.subject)}, accounts: [{Account.RUNTIMES}] }}"
        for share in shares
    ]
    # Public: every account may import within them, and which subjects each one
    # imports is this configuration's to say (an account's own, mapped).
    exports += [f"{{ {share.kind}: {json.dumps(share.subject)} }}" for share in ACCOUNT_SHARES]
    imports = [render_import(share) for share in shares]
    midcall = ["jetstream: enabled", *render_list("users", members[Account.MIDCALL])]
    midcall += render_list("exports", exports)
    runtimes = render_list("users", members[Account.RUNTIMES]) + render_list("imports", imports)
    system = render_list("users", members[Account.SYSTEM])
    included = [f"  include {json.dumps(include)}"] if include else []
    return "\n".join(
        [
            # Its own, so that the reload role's requests can be granted, and nothing more.
            f"system_account: {Account.SYSTEM}",
            "accounts {",
            *_render_account(Account.MIDCALL, midcall),
            *_render_account(Account.RUNTIMES, runtimes),
            *_render_account(Account.SYSTEM, system),
            *included,
            "}",
            "",
        ]
    )


# What an account's own runtimes reach, in Midcall's account (shared.security.runtime_accounts).
ACCOUNT_SHARES = (
    Share("service", subjects.ACCOUNT_CALLS),
    Share("service", subjects.ACCOUNT_ENDED),
    Share("service", subjects.ACCOUNT_CANCELS),
    Share("stream", subjects.ACCOUNT_PENDING),
    Share("stream", subjects.ACCOUNT_RESULTS),
    Share("stream", subjects.ACCOUNT_PROGRESS),
    Share("service", subjects.ACCOUNT_STORED),
)


def _render_account(name: Account, body: list[str]) -> list[str]:
    return [f"  {name} {{", *(f"    {line}" for line in body), "  }"]


def render_list(key: str, entries: Iterable[NatsUser | str]) -> list[str]:
    lines = [f"{key} = ["]
    for entry in entries:
        text = _render_user(entry) if isinstance(entry, NatsUser) else entry
        lines += [f"  {line}" for line in text.split("\n")]
    return [*lines, "]"]


def render_import(share: Share) -> str:
    source = f"{{ account: {Account.MIDCALL}, subject: {json.dumps(share.subject)} }}"
    mapped = f", to: {json.dumps(share.to)}" if share.to else ""
    return f"{{ {share.kind}: {source}{mapped} }}"


def _render_user(user: NatsUser) -> str:
    granted = user.permissions
    # Subjects are JSON strings: quoted, so "$JS..." is never read as a variable.
    lines = [
        "{",
        f"  user: {json.dumps(user.name)}",
        f"  password: {user.password}",
        "  permissions: {",
        f"    publish: {{ allow: {json.dumps(list(granted.publish))} }}",
        f"    subscribe: {{ allow: {json.dumps(list(granted.subscribe))} }}",
    ]
    if granted.allow_responses:
        lines.append("    allow_responses: true")
    lines += ["  }", "}"]
    return "\n".join(lines)


# --- passwords nats-server reads from its environment ----------------------------------

# nats-server resolves ``$MIDCALL_NATS_PASSWORD_<ROLE>`` by parsing the value as config
# (measured on 2.15.1): one starting with a digit or ``-`` is a number or a date
# (``12345``, ``1.5``, ``2024-01-02``: the server does not start), ``true``, ``yes`` or
# ``on`` a boolean; ``;``, ``,``, ``]``, ``}``, ``'``, ``\``, spaces and tabs end or escape
# it; a ``$`` value is another variable. A letter, then letters and digits, longer than
# any boolean, is always read as itself.
ENV_PASSWORD_RULE = "16 or more letters and digits (A-Z, a-z, 0-9), the first a letter"
ENV_PASSWORD_EXAMPLE = "echo p$(openssl rand -hex 32)"
_ENV_PASSWORD = re.compile(r"[A-Za-z][A-Za-z0-9]{15,}")
_LETTERS_AND_DIGITS = string.ascii_letters + string.digits


class UnreadablePassword(ValueError):
    """A password nats-server would not read as itself from its environment."""


def generate_password() -> str:
    """A new role password, in ``ENV_PASSWORD_RULE``: usable in any config, and in
    nats-server's environment too."""
    rest = (secrets.choice(_LETTERS_AND_DIGITS) for _ in range(PASSWORD_LENGTH - 1))
    return secrets.choice(string.ascii_letters) + "".join(rest)


def env_password_problem(variable: str, password: str) -> str | None:
    """Why nats-server would misread ``password`` from ``variable``; None: it would not."""
    if _ENV_PASSWORD.fullmatch(password):
        return None
    return (
        f"{variable}: nats-server would not read this password as it is from its "
        f"environment; use {ENV_PASSWORD_RULE} (make one with `{ENV_PASSWORD_EXAMPLE}`)"
    )


def check_env_passwords(environ: Mapping[str, str], roles: Iterable[Role] = tuple(Role)) -> None:
    """Refuse, before nats-server reads them, the role passwords set in ``environ`` that
    it would misread (compose's nats container checks the same in
    ``infra/check-nats-passwords.sh``)."""
    variables = [password_env(role) for role in roles if password_env(role) in environ]
    problems = [p for v in variables if (p := env_password_problem(v, environ[v]))]
    if problems:
        raise UnreadablePassword("\n".join(problems))


# --- credentials kept across restarts --------------------------------------------------


def load_or_create_credentials(data_dir: Path) -> dict[Role, str]:
    """Every role's password, generated on first use and kept in ``data_dir`` (mode 0600).

    Idempotent: an existing password is never replaced, so a restarted fabric
    (and a nats-server reusing its config) keeps working; a role added since
    gets one of its own. New ones keep to ``ENV_PASSWORD_RULE``; older ones
    (``secrets.token_urlsafe``, some shaped like a date or a number) stay as they
    are: ``render_authorization`` quotes them, so nats-server reads them as written.
    """
    path = data_dir / CREDENTIALS_FILE
    stored = read_credentials(path) if path.exists() else {}
    missing = [role for role in Role if role not in stored]
    if missing:
        stored |= {role: generate_password() for role in missing}
        write_private(path, json.dumps({role.value: p for role, p in stored.items()}, indent=2))
    return stored


def read_credentials(path: Path) -> dict[Role, str]:
    """The passwords in ``path``; roles this version does not know are ignored."""
    # A copy restored from a backup may have come back readable by others.
    private_file(path)
    stored = json.loads(path.read_text())
    if not isinstance(stored, dict):
        raise ValueError(f"{path} does not hold NATS credentials")
    known = {role.value: role for role in Role}
    return {
        known[name]: password
        for name, password in stored.items()
        if name in known and isinstance(password, str) and password
    }
