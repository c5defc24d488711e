"""A runaway LLM loop: the same call again and again is refused before it reaches the API."""

from services.dispatcher.loops import LoopBreaker
from tests.support.api import RecordingApi
from tests.support.fabric import Fabric
from tests.test_spine import AGENT, booking_tool, new_call, place


async def test_the_sixth_identical_call_in_a_minute_fails_fast(
    fabric: Fabric, api: RecordingApi
) -> None:
    api.reply("POST", "/book", json={"success": True, "stylist_name": "Ana"})
    await fabric.register(AGENT, booking_tool(api.url))
    first = new_call()
    same = [new_call(conversation_id=first["conversation_id"]) for _ in range(5)]

    results = [await place(fabric, call) for call in [first, *same]]
    other = await place(
        fabric,
        new_call(
            conversation_id=first["conversation_id"],
            arguments={"date": "2024-04-21", "time": "11:00 AM", "service": "Haircut"},
        ),
    )

    assert [r["status"] for r in results] == ["success"] * 5 + ["error"]
    refused = results[-1]
    assert refused["error"]["code"] == "repeated_call"
    assert refused["error"]["message"].startswith("BookAppointment was already called 5 times")
    assert len(api.received) == 6  # five repeats and the call with other arguments
    assert other["status"] == "success"


def test_the_window_slides() -> None:
    clock = [0.0]
    loops = LoopBreaker(limit=2, window_s=60, clock=lambda: clock[0])

    allowed = [loops.allow("c", "T", {"a": 1}) for _ in range(3)]
    clock[0] = 60.0
    later = loops.allow("c", "T", {"a": 1})

    assert allowed == [True, True, False]
    assert later is True
    assert loops.allow("c", "T", {"a": 2}) is True
    assert loops.allow("other", "T", {"a": 1}) is True


def test_calls_older_than_the_window_are_forgotten() -> None:
    clock = [0.0]
    loops = LoopBreaker(limit=2, window_s=60, clock=lambda: clock[0])
    for n in range(100):
        loops.allow("c", "T", {"n": n})

    clock[0] = 61.0
    loops.allow("c", "T", {"n": "new"})

    assert len(loops._seen) == 1  # only the call of this window is kept
