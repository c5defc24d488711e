"""What the benchmark runs: how many calls in each phase, and the calls themselves."""

import json
from dataclasses import dataclass, replace
from typing import Any

from shared.contract.tools import MAX_TIMEOUT_S

AGENT = "bench"
ACCOUNT = "bench"
FAST_TOOL = "CheckSlots"
FAST_TIMEOUT_S = 2.0
DELAYED_TOOL = "CheckSlotsSlowly"
# About 300 bytes of JSON, like an LLM's arguments for a booking lookup.
ARGUMENTS: dict[str, Any] = {
    "date": "2026-11-28",
    "service": "Haircut",
    "stylist": "any",
    "duration_minutes": 45,
    "caller": {"name": "Jordan Example", "phone": "+12223334444"},
    "preferences": {"time_of_day": "morning", "max_price": 60, "language": "en"},
    "notes": "First visit; prefers a quiet chair near the window, running late is likely.",
}
BODY = json.dumps(ARGUMENTS).encode()


def arguments(index: int) -> dict[str, Any]:
    """The arguments of call ``index``: each call in a conversation differs, as real ones do
    (the same call repeated more than 5 times a minute is refused as an LLM loop)."""
    return {**ARGUMENTS, "turn": index}


@dataclass(frozen=True)
class Plan:
    """Calls per phase; ``QUICK`` is the same shape in about 30 seconds."""

    name: str
    one_at_a_time: int
    loop_calls: int
    at_once: int
    delay_s: float  # how long the delayed endpoint takes, for the at-once phase
    at_once_timeout_s: float
    cold_starts: int  # agents whose python tool is called first in a fresh account
    warmup: int = 20
    in_flight: tuple[int, ...] = (64, 256)
    python_in_flight: int = 64  # the trivial function's closed loop
    sdk_calls: int = 1000  # per variant and round of the SDK's cost (bench.sdk_phase)
    path_calls: int = 1000  # per path: plain, progress, cancel (bench.progress_cancel)
    conversations: int = 64  # calls are spread over these, as real traffic would be
    result_timeout_s: float = 60.0  # a call with no result by then is lost
    replicas: int = 1
    nats_nodes: int = 1  # above 1: a cluster on loopback, every stream in that many copies

    @property
    def measured_in_flight(self) -> int:
        """The closed loop whose CPU cost per process is reported: the busiest."""
        return max(self.in_flight)

    def with_replicas(self, replicas: int, nats_nodes: int = 1) -> "Plan":
        return replace(self, replicas=replicas, nats_nodes=nats_nodes)


FULL = Plan(
    "full",
    one_at_a_time=300,
    loop_calls=3000,
    at_once=10_000,
    delay_s=2.0,
    at_once_timeout_s=120.0,
    cold_starts=30,
)
QUICK = Plan(
    "quick",
    one_at_a_time=50,
    loop_calls=400,
    at_once=1000,
    delay_s=1.0,
    at_once_timeout_s=60.0,
    cold_starts=10,
    sdk_calls=200,
    path_calls=200,
)


def tools(api_url: str, delay_s: float) -> list[dict[str, Any]]:
    """Two canonical POST tools, the body being the arguments: one fast, one slow."""
    shape = {
        "description": "Lists the free slots for a service on a date.",
        "parameters": {
            "type": "object",
            "required": ["date", "service"],
            "properties": {"date": {"type": "string"}, "service": {"type": "string"}},
        },
        "speech": {"on_send": "Let me check the diary for you."},
        "response": {"variables": {"free_slots": "$.slots"}},
    }
    return [
        {
            **shape,
            "name": FAST_TOOL,
            # A short deadline, so every call's deadline timer fires (and is paid for)
            # within the closed loop's CPU window (see bench.fabric.wait_timers_fired).
            "request": {"url": f"{api_url}/slots", "method": "POST", "timeout_s": FAST_TIMEOUT_S},
        },
        {
            **shape,
            "name": DELAYED_TOOL,
            # The longest a tool may wait: thousands of calls queue before theirs runs.
            "request": {
                "url": f"{api_url}/delayed?delay_s={delay_s}",
                "method": "POST",
                "timeout_s": MAX_TIMEOUT_S,
            },
        },
    ]
