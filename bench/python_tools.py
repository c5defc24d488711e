"""The python tools the benchmark registers: the fast HTTP tool's work as a function, and one
that does nothing, so the sandbox's own cost shows.

Written as a CallKaro customer writes them (advanced mode): ``async def`` with ``ctx``
first, annotated parameters documented under ``Args:``, a dict with ``status`` back,
and ``httpx`` given, not imported. The registry derives each tool's ``parameters``
from the signature and the docstring's ``Args:``.
"""

from typing import Any

from bench.plan import FAST_TIMEOUT_S

FAST_PYTHON_TOOL = "CheckSlotsInPython"
TRIVIAL_TOOL = "AnswerAtOnce"
# A cold call waits for its account's jail to start: measured, not cut short at 2 s.
COLD_TIMEOUT_S = 10.0

# CheckSlots' request, made by the function: the same POST, the same body.
FAST_CODE = '''
async def CheckSlotsInPython(
    ctx: RunContext,
    date: str,
    service: str,
    stylist: str,
    duration_minutes: int,
    caller: dict,
    preferences: dict,
    notes: str,
    turn: int,
) -> dict:
    """Lists the free slots for a service on a date.

    Args:
        date: The day, as YYYY-MM-DD.
        service: What the caller wants done.
        stylist: Whom they would like, or "any".
        duration_minutes: How long the service takes.
        caller: The caller's name and phone number.
        preferences: Time of day, price and language they prefer.
        notes: Anything else they said.
        turn: Which turn of the conversation this is.
    """
    asked = {
        "date": date,
        "service": service,
        "stylist": stylist,
        "duration_minutes": duration_minutes,
        "caller": caller,
        "preferences": preferences,
        "notes": notes,
        "turn": turn,
    }
    async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:
        response = await client.post(SLOTS_URL, json=asked)
    if response.status_code != 200:
        return {"status": "error", "message": f"the diary answered {response.status_code}"}
    found = response.json()
    return {
        "status": "success",
        "date": found["date"],
        "service": found["service"],
        "slots": found["slots"],
    }
'''

TRIVIAL_CODE = '''
async def AnswerAtOnce(ctx: RunContext, turn: int) -> dict:
    """Answers at once, doing nothing.

    Args:
        turn: Which turn of the conversation this is.
    """
    return {"status": "success"}
'''

TOOL_ERROR = {"path": "$.status", "equals": "error", "message_path": "$.message"}


def trivial_arguments(index: int) -> dict[str, Any]:
    return {"turn": index}


def fast_python_tool(api_url: str, timeout_s: float = FAST_TIMEOUT_S) -> dict[str, Any]:
    """CheckSlots as a function: the API's URL and the timeout written into the code."""
    code = FAST_CODE.replace("SLOTS_URL", repr(f"{api_url}/slots")).replace(
        "TIMEOUT_S", repr(timeout_s)
    )
    return {
        "name": FAST_PYTHON_TOOL,
        "kind": "python",
        "description": "Lists the free slots for a service on a date.",
        "python": {"code": code, "function": FAST_PYTHON_TOOL, "timeout_s": timeout_s},
        "speech": {"on_send": "Let me check the diary for you."},
        "response": {"variables": {"free_slots": "$.slots"}, "tool_error": TOOL_ERROR},
    }


def trivial_tool() -> dict[str, Any]:
    return {
        "name": TRIVIAL_TOOL,
        "kind": "python",
        "description": "Answers at once, doing nothing.",
        # As CheckSlots': every call's deadline timer fires within the loop's CPU window.
        "python": {"code": TRIVIAL_CODE, "function": TRIVIAL_TOOL, "timeout_s": FAST_TIMEOUT_S},
        "response": {"tool_error": TOOL_ERROR},
    }
