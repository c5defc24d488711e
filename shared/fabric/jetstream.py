"""Streams and KV buckets, defined once.

Every process that needs them calls ``ensure``; definitions must be
identical everywhere, since JetStream refuses a bucket re-declared with other
settings.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from functools import partial

from nats.js import JetStreamContext
from nats.js.api import (
    DiscardPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
    StreamConsumerLimits,
)
from nats.js.errors import BadRequestError, NotFoundError

from shared.contract import subjects

log = logging.getLogger("midcall.jetstream")
DAY = 24 * 3600.0
# How long setup waits for a stream moved to another number of replicas to have them all.
MOVE_TIMEOUT_S = 120.0
# JetStream's "no suitable peers for placement": a stream with more copies than the nodes
# its meta leader can place them on. Just after a cluster forms (or a node restarts), the
# leader counts a node only once it has had the node's first statistics (nats-server's
# nodeInfo.selectable), which can come after the node is in the meta group: setup waits
# for it, as for a node still starting, and fails with JetStream's reason after this.
NO_SUITABLE_PEERS = 10005
PLACEMENT_PATIENCE_S = 30.0
MAX_CONV_CONSUMERS = 10_000
CONV_CONSUMER_LIMITS = StreamConsumerLimits(inactive_threshold=60.0)
# What the fabric tells the shared runtime user's runtimes, and each account's own.
CONV_SUBJECTS = (subjects.ALL_PENDING, subjects.ALL_RESULTS, subjects.ALL_PROGRESS)
ACCOUNT_CONV_SUBJECTS = (
    subjects.ACCOUNT_PENDING,
    subjects.ACCOUNT_RESULTS,
    subjects.ACCOUNT_PROGRESS,
)
# What runtimes say of a conversation: it ended, or one of its calls is cancelled.
ENDED_SUBJECTS = (
    subjects.ALL_ENDED,
    subjects.ACCOUNT_ENDED,
    subjects.ALL_CANCELS,
    subjects.ACCOUNT_CANCELS,
)

STREAMS = (
    # Calls are kept a week for audit and replay; 2 minutes of Nats-Msg-Id de-duplication.
    StreamConfig(
        name=subjects.CALLS_STREAM,
        subjects=[subjects.ALL_CALLS],
        storage=StorageType.FILE,
        max_age=7 * DAY,
        duplicate_window=120.0,
    ),
    # What the fabric tells runtimes; a day lets a reconnecting runtime catch up.
    # Only services publish here, so no one else can take a result's dedupe id.
    # Runtimes create consumers of their own here: bounded in number, and each gone
    # within a minute of its runtime (nats-server refuses a longer inactive threshold),
    # so runtimes cannot exhaust nats-server's memory, nor keep the slots.
    StreamConfig(
        name=subjects.CONV_STREAM,
        subjects=list(CONV_SUBJECTS),
        storage=StorageType.FILE,
        max_age=DAY,
        duplicate_window=120.0,
        max_consumers=MAX_CONV_CONSUMERS,
        consumer_limits=CONV_CONSUMER_LIMITS,
    ),
    # The same for the runtimes of an account's own credentials: a stream of its own, out
    # of reach of the consumers the shared runtime user creates on MIDCALL_CONV (with any
    # filter it likes). Stored for the same one copy per Nats-Msg-Id; no one reads it yet.
    StreamConfig(
        name=subjects.ACCOUNT_CONV_STREAM,
        subjects=list(ACCOUNT_CONV_SUBJECTS),
        storage=StorageType.FILE,
        max_age=DAY,
        duplicate_window=120.0,
    ),
    # What runtimes say of a conversation: it ended (billing and executors listen), or a
    # call is cancelled (executors listen).
    StreamConfig(
        name=subjects.ENDED_STREAM,
        subjects=list(ENDED_SUBJECTS),
        storage=StorageType.FILE,
        max_age=DAY,
        duplicate_window=120.0,
    ),
    StreamConfig(
        name=subjects.USAGE_STREAM,
        subjects=[subjects.ALL_USAGE],
        storage=StorageType.FILE,
        max_age=30 * DAY,
        duplicate_window=120.0,
    ),
    # Work in flight between services: removed once the next service acks it.
    StreamConfig(
        name=subjects.WORK_STREAM,
        subjects=[*subjects.WORK_SUBJECTS, subjects.ALL_EXECUTED],
        storage=StorageType.FILE,
        retention=RetentionPolicy.WORK_QUEUE,
        duplicate_window=120.0,
    ),
    StreamConfig(
        name=subjects.DEAD_STREAM,
        subjects=[subjects.ALL_DEAD],
        storage=StorageType.FILE,
        max_age=30 * DAY,
        discard=DiscardPolicy.OLD,
    ),
    # Ops traffic: failed runs on their way to the registry's store, and replays on
    # their way to a dispatcher; each removed once its one consumer acks it.
    StreamConfig(
        name=subjects.OPS_STREAM,
        subjects=[subjects.ALL_RUNS, subjects.ALL_REPLAYS],
        storage=StorageType.FILE,
        retention=RetentionPolicy.WORK_QUEUE,
        max_age=30 * DAY,
        duplicate_window=120.0,
    ),
    # Deadline timers (shared.fabric.deadline_timers): schedules nats-server fires itself.
    StreamConfig(
        name=subjects.TIMERS_STREAM,
        subjects=[subjects.ALL_TIMERS, subjects.ALL_DEADLINES],
        storage=StorageType.FILE,
        # A fired deadline is gone once a replica acks it; a schedule, which no
        # consumer reads, stays until it fires (no consumer may ever filter on
        # midcall.timers.>: it would take schedules out of the stream).
        retention=RetentionPolicy.WORK_QUEUE,
        # Must exceed MAX_AHEAD_S, or schedules age out before they fire; beyond
        # that, how long a fired deadline waits for a replica (or the server):
        # five minutes late, a call's deadline no longer matters.
        max_age=300.0,
        duplicate_window=120.0,
        allow_msg_schedules=True,
    ),
)

BUCKETS = (
    # Tool definitions and agents, written by the registry, watched by dispatchers.
    KeyValueConfig(bucket=subjects.CATALOG_BUCKET, history=1, storage=StorageType.FILE),
    # How far each call got (claimed, executed, answered): see shared.fabric.call_marks.
    KeyValueConfig(
        bucket=subjects.CALL_CLAIMS_BUCKET, history=1, ttl=DAY, storage=StorageType.FILE
    ),
    # Each conversation's response variables: written by injectors, read by the registry.
    KeyValueConfig(
        bucket=subjects.CONVERSATIONS_BUCKET, history=1, ttl=DAY, storage=StorageType.FILE
    ),
    # Account API keys (digests only), mirrored from the registry's SQL:
    # see shared.security.api_keys.
    KeyValueConfig(bucket=subjects.API_KEYS_BUCKET, history=1, storage=StorageType.FILE),
    # Account secrets, sealed (shared.security.secret_box): written by the registry from its SQL,
    # read and opened only by http-executors.
    KeyValueConfig(bucket=subjects.SECRETS_BUCKET, history=1, storage=StorageType.FILE),
    # Runtime credentials (bcrypt digests), mirrored from the registry's SQL: the process
    # running nats-server renders them as accounts' runtime users
    # (shared.security.runtime_accounts).
    KeyValueConfig(bucket=subjects.RUNTIME_CREDENTIALS_BUCKET, history=1, storage=StorageType.FILE),
    # The completion of each call whose API answered 202, created once by the registry
    # (shared.security.callback_tokens) and watched by http-executors; kept beyond any
    # call's deadline, so a redelivered call finds its completion instead of calling again.
    KeyValueConfig(
        bucket=subjects.CALLBACKS_BUCKET, history=1, ttl=3600.0, storage=StorageType.FILE
    ),
)


async def ensure(js: JetStreamContext, replicas: int = 1, move: bool = False) -> None:
    """Create the streams and buckets that do not exist yet, with ``replicas`` copies
    each (MIDCALL_STREAM_REPLICAS; a cluster's nodes hold them); leave existing ones alone,
    but for ``move`` (``midcall setup``): then an existing one with another number of
    replicas is moved to ``replicas`` in place, which JetStream does without a pause.

    Creating a stream with an identical definition is idempotent in JetStream,
    so processes starting at once may race here safely; an operator's tuned
    stream (other settings) is never overwritten.
    """
    await _upgrade_conv(js)
    # Progress of calls completing through their callback (added with the SDK).
    await _add_subjects(js, subjects.CONV_STREAM, CONV_SUBJECTS)
    await _add_subjects(js, subjects.ACCOUNT_CONV_STREAM, ACCOUNT_CONV_SUBJECTS)
    # Made before runtime credentials: each account's own runtimes' ends too.
    await _add_subjects(js, subjects.ENDED_STREAM, ENDED_SUBJECTS)
    await _add_subjects(js, subjects.WORK_STREAM, subjects.WORK_SUBJECTS)  # python tools' work
    existing: list[StreamConfig] = []
    for stream in STREAMS:
        assert stream.name is not None
        try:
            existing.append((await js.stream_info(stream.name)).config)
        except NotFoundError:
            await _placed(partial(js.add_stream, replace(stream, num_replicas=replicas)))
    for bucket in BUCKETS:
        try:
            existing.append((await js.stream_info(subjects.kv_stream(bucket.bucket))).config)
        except NotFoundError:
            await _placed(partial(js.create_key_value, replace(bucket, replicas=replicas)))
    if move:  # all at once: each waits for its new copies to catch up
        await asyncio.gather(*(_move(js, config, replicas) for config in existing))


async def _move(js: JetStreamContext, config: StreamConfig, replicas: int) -> None:
    """Move a stream to ``replicas`` copies; return once the cluster holds them all, caught
    up, so that setup is done when it says so (a node lost right after loses nothing)."""
    if config.num_replicas == replicas:
        return
    config.num_replicas = replicas
    await _placed(partial(js.update_stream, config))
    assert config.name is not None
    async with asyncio.timeout(MOVE_TIMEOUT_S):
        while True:
            info = await js.stream_info(config.name)
            peers = (info.cluster.replicas or []) if info.cluster else []
            if 1 + len(peers) == replicas and all(peer.current for peer in peers):
                return
            await asyncio.sleep(0.1)  # the new copies catch up from the leader


async def _placed(create: Callable[[], Awaitable[object]]) -> None:
    """Create or resize a stream, waiting up to ``PLACEMENT_PATIENCE_S`` for the nodes its
    copies need to be placeable."""
    give_up = time.monotonic() + PLACEMENT_PATIENCE_S
    while True:
        try:
            await create()
            return
        except BadRequestError as refused:
            if refused.err_code != NO_SUITABLE_PEERS or time.monotonic() > give_up:
                raise
            log.warning("JetStream cannot place every copy yet (%s); trying again", refused)
        await asyncio.sleep(0.25)


async def _upgrade_conv(js: JetStreamContext) -> None:
    """Upgrade a MIDCALL_CONV made by an earlier version.

    - It held ``midcall.conv.>``: runtimes publishing ``ended`` there could take
      a result's dedupe id, and billing's durable there kept runtimes from
      reading it through consumers of their own. Its subjects shrink to pending
      and result, so MIDCALL_ENDED can be created next; ends stored before stay
      where they are until they age out.
    - It allowed any number of consumers, kept as long as they asked, and
      runtimes now create them: it gets the bounds, unless an operator set some.
    """
    try:
        info = await js.stream_info(subjects.CONV_STREAM)
    except NotFoundError:
        return
    config, changed = info.config, False
    if subjects.ALL_CONV in (config.subjects or []):
        config.subjects = [subjects.ALL_PENDING, subjects.ALL_RESULTS]
        changed = True

    if config.max_consumers is None or config.max_consumers <= 0:  # -1: unlimited
        config.max_consumers = MAX_CONV_CONSUMERS
        changed = True
    if config.consumer_limits is None or config.consumer_limits.inactive_threshold is None:
        config.consumer_limits = CONV_CONSUMER_LIMITS
        changed = True
    if changed:
        await js.update_stream(config)


async def _add_subjects(js: JetStreamContext, stream: str, wanted: tuple[str, ...]) -> None:
    """Give a stream made by an earlier version the subjects it lacks, keeping its others."""
    try:
        info = await js.stream_info(stream)
    except NotFoundError:
        return
    config = info.config
    if not set(wanted) <= set(config.subjects or []):
        config.subjects = _unique([*(config.subjects or []), *wanted])
        await js.update_stream(config)


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))
