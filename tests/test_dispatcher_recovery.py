"""A dispatcher that dies after claiming a call: the redelivery finishes the call, once."""

from services.dispatcher.app import DURABLE
from services.dispatcher.main import DispatcherService
from shared.fabric.call_marks import CallMarks
from tests.support.api import RecordingApi
from tests.support.fabric import Fabric
from tests.test_spine import AGENT, booking_tool, events_of, new_call


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
