"""A dispatcher that dies after claiming a call: the redelivery finishes the call, once."""

from services.dispatcher.app import DURABLE, Dispatcher
from services.dispatcher.directory import Directory
from services.dispatcher.main import DispatcherService
from shared.contract import subjects
from shared.fabric.call_marks import CallMarks
from shared.fabric.deadline_timers import DeadlineTimers
from shared.fabric.messaging import Publisher
from tests.support.api import RecordingApi
from tests.support.fabric import Fabric
from tests.test_spine import AGENT, booking_tool, events_of, new_call, place


async def test_a_call_claimed_by_a_dead_dispatcher_is_finished_by_the_next_one(
    fabric: Fabric, api: RecordingApi
) -> None:
    api.reply("POST", "/book", json={"success": True, "stylist_name": "Ana"})
    await fabric.register(AGENT, booking_tool(api.url))
    dispatcher = next(s for s in fabric.services if isinstance(s, DispatcherService))
    await dispatcher.stop()
    call = new_call()
    js = fabric.nc.jetstream()

    # What the dead dispatcher did: claimed the call, took the message, never acked it.
    claims = await CallMarks.of(fabric.nc)
    assert await claims.claim(call["conversation_id"], call["call_id"], "dead") is True
    await fabric.runtime.listen(call["conversation_id"])
    await fabric.runtime.call(call)
    taken = await js.pull_subscribe_bind(DURABLE.name, stream=DURABLE.stream)
    [message] = await taken.fetch(1, timeout=5)
    await message.nak()  # as its ack wait running out would, only sooner

    replacement = DispatcherService(fabric.settings)
    fabric.services[fabric.services.index(dispatcher)] = replacement
    await replacement.start()
    result = await fabric.runtime.wait_for(call["conversation_id"], "result", call["call_id"])
    await fabric.drained()

    assert result["status"] == "success"
    assert [e["_kind"] for e in events_of(fabric, call)] == ["pending", "result"]
    assert len(api.received) == 1


async def test_a_call_given_up_on_after_it_was_answered_gets_no_second_result(
    fabric: Fabric, api: RecordingApi
) -> None:
    # A dispatcher gives up on a call when a failure no retry fixes comes, or its
    # deliveries run out, perhaps after an earlier delivery sent its work item.
    api.reply("POST", "/book", json={"success": True, "stylist_name": "Ana"})
    await fabric.register(AGENT, booking_tool(api.url))
    call = new_call()
    conversation_id = call["conversation_id"]
    assert (await place(fabric, call))["status"] == "success"
    await fabric.drained()

    js = fabric.nc.jetstream()
    stored = await js.pull_subscribe(subjects.calls(conversation_id), stream=subjects.CALLS_STREAM)
    [message] = await stored.fetch(1, timeout=5)
    heard = await fabric.nc.subscribe(subjects.result(conversation_id))
    directory = Directory()
    await directory.follow(js)
    dispatcher = Dispatcher(
        Publisher(js),
        directory,
        await CallMarks.of(fabric.nc),
        DeadlineTimers(fabric.nc),
        fabric.nc.max_payload // 2,
    )
    try:
        await dispatcher.give_up(message, RuntimeError("a failure no retry fixes"))
        # A result it published would have reached this connection before the
        # confirmation of its publish, and before the answer to this flush.
        await fabric.nc.flush()
        assert heard.pending_msgs == 0
    finally:
        await heard.unsubscribe()
        await directory.stop()
