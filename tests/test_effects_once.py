"""A redelivery after a lost ack repeats nothing: no second request to the API, no second result.

JetStream cannot be made to lose an ack on cue, so the redelivery is the one it
would make: the same bytes, delivered a second time (``num_delivered`` 2).
"""

import asyncio
from typing import Any

from nats.aio.msg import Msg

from services.http_executor.execute import Executor
from services.result_injector.app import Injector
from services.result_injector.main import price_book
from shared.contract import subjects
from shared.contract.addressing import conversation_key
from shared.contract.catalog import DEFAULT_ACCOUNT
from shared.fabric.call_marks import CallMarks, Mark, call_key, run_key
from shared.fabric.conversations import ConversationVariables
from shared.fabric.deadline_timers import DeadlineTimers
from shared.fabric.executors import ExecutorApp
from shared.fabric.messaging import Publisher
from shared.security.destinations import DestinationPolicy
from tests.support.api import RecordingApi
from tests.support.fabric import SECRETS, Fabric
from tests.support.stale_buckets import GoneBeforeRead, PurgedBeforeOwnRead
from tests.test_execute import ScriptedApi
from tests.test_spine import AGENT, booking_tool, new_call, place


def redelivery(fabric: Fabric, original: Msg) -> Msg:
    # The ack subject JetStream uses: stream, consumer, delivered, stream/consumer seq, time, left.
    return Msg(
        _client=fabric.nc,
        subject=original.subject,
        reply="$JS.ACK.MIDCALL_WORK.test.2.1.1.1700000000000000000.0",
        data=original.data,
        headers=original.headers,
    )


async def first_run(fabric: Fabric, api: RecordingApi, internal: str) -> tuple[dict[str, Any], Msg]:
    """One call run normally, and the internal message it went through, as sent."""
    api.reply("POST", "/book", json={"success": True, "stylist_name": "Ana"})
    await fabric.register(AGENT, booking_tool(api.url))
    seen = await fabric.nc.subscribe(internal, max_msgs=1)
    call = new_call()
    assert (await place(fabric, call))["status"] == "success"
    return call, await seen.next_msg(timeout=5)


async def marks(fabric: Fabric) -> CallMarks:
    return await CallMarks.of(fabric.nc)


async def test_a_redelivered_work_item_of_an_executed_call_is_not_sent_again(
    fabric: Fabric, api: RecordingApi
) -> None:
    _, work = await first_run(fabric, api, subjects.ALL_EXEC)
    outcomes = await fabric.nc.subscribe(subjects.ALL_EXECUTED)
    scripted = ScriptedApi((200,))
    executor = ExecutorApp(
        Publisher(fabric.nc.jetstream()),
        Executor(scripted, DestinationPolicy("127.0.0.1"), SECRETS),
        await marks(fabric),
    )

    await executor.handle(redelivery(fabric, work))

    assert scripted.seen == []
    assert len(api.received) == 1
    await fabric.nc.flush()
    assert outcomes.pending_msgs == 0


async def test_a_redelivered_work_item_never_executed_is_sent(
    fabric: Fabric, api: RecordingApi
) -> None:
    call, work = await first_run(fabric, api, subjects.ALL_EXEC)
    call_marks = await marks(fabric)
    other = new_call()
    never_run = work.data.replace(call["call_id"].encode(), other["call_id"].encode())
    scripted = ScriptedApi((200,))
    executor = ExecutorApp(
        Publisher(fabric.nc.jetstream()),
        Executor(scripted, DestinationPolicy("127.0.0.1"), SECRETS),
        call_marks,
    )

    conversation = conversation_key(DEFAULT_ACCOUNT, call["conversation_id"])
    kv = await fabric.nc.jetstream().key_value(subjects.CALL_CLAIMS_BUCKET)
    executed = await kv.watch(f"{run_key(conversation, other['call_id'], 1)}.{Mark.EXECUTED}")

    await executor.handle(redelivery(fabric, Msg(fabric.nc, work.subject, data=never_run)))

    assert len(scripted.seen) == 1
    # Sent without waiting for JetStream's confirmation: stored a moment later (the watch
    # first gives None, for nothing stored before).
    async with asyncio.timeout(5):
        while (await executed.updates(timeout=5)) is None:  # type: ignore[no-untyped-call]
            pass
    assert await call_marks.has(conversation, other["call_id"], Mark.EXECUTED)


async def test_a_redelivered_outcome_of_an_answered_call_publishes_no_second_result(
    fabric: Fabric, api: RecordingApi
) -> None:
    call, outcome = await first_run(fabric, api, subjects.ALL_EXECUTED)
    js = fabric.nc.jetstream()
    injector = Injector(
        Publisher(js),
        price_book(fabric.settings),
        ConversationVariables(await js.key_value(subjects.CONVERSATIONS_BUCKET)),
        await marks(fabric),
        DeadlineTimers(fabric.nc),
    )

    await injector.handle(redelivery(fabric, outcome))
    # A result would have reached the runtime before this round trip on its connection ends.
    await fabric.runtime.client.flush()

    kinds = [
        e["_kind"]
        for e in fabric.runtime.events[call["conversation_id"]]
        if e["call_id"] == call["call_id"]
    ]
    assert kinds == ["pending", "result"]


async def test_a_claim_refused_then_not_found_by_nats_py_itself_is_asked_again(
    fabric: Fabric,
) -> None:
    claims = await fabric.nc.jetstream().key_value(subjects.CALL_CLAIMS_BUCKET)
    assert await CallMarks(claims, fabric.nc).claim("conv-2", "call-2", "dispatcher-1")
    purged = PurgedBeforeOwnRead(
        fabric.nc.jetstream(), subjects.CALL_CLAIMS_BUCKET, call_key("conv-2", "call-2")
    )

    made = await CallMarks(purged, fabric.nc).claim("conv-2", "call-2", "dispatcher-2")

    assert purged.purged == [call_key("conv-2", "call-2")]
    assert made
    assert (await claims.get(call_key("conv-2", "call-2"))).value == b"dispatcher-2"


async def test_a_claim_taken_then_not_found_is_asked_again_not_failed(fabric: Fabric) -> None:
    claims = await fabric.nc.jetstream().key_value(subjects.CALL_CLAIMS_BUCKET)
    assert await CallMarks(claims, fabric.nc).claim("conv-1", "call-1", "dispatcher-1")
    gone = GoneBeforeRead(fabric.nc.jetstream())

    # Asked again, the claim is free: the one asking makes it.
    made = await CallMarks(gone, fabric.nc).claim("conv-1", "call-1", "dispatcher-2")

    assert gone.deleted == [call_key("conv-1", "call-1")]
    assert made
    assert (await claims.get(call_key("conv-1", "call-1"))).value == b"dispatcher-2"
