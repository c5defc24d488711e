"""The demo's tools and its scripted conversation."""

from dataclasses import dataclass
from typing import Any

SECRET_NAME = "SALON_API_KEY"
AUTH = {"Authorization": f"Bearer {{{{secrets.{SECRET_NAME}}}}}"}


def tools(api_url: str) -> list[dict[str, Any]]:
    """The salon's tools, in the canonical dialect."""
    return [
        {
            "name": "CheckAvailability",
            "description": "Lists the free slots for a service on a date.",
            "parameters": {
                "type": "object",
                "required": ["date", "service"],
                "properties": {
                    "date": {"type": "string", "description": "YYYY-MM-DD"},
                    "service": {"type": "string", "enum": ["Haircut", "Colour", "Blow-dry"]},
                },
            },
            "request": {"url": f"{api_url}/availability", "method": "GET", "headers": AUTH},
            "speech": {"on_send": "Let me check the diary for you."},
            "response": {"variables": {"free_slots": "$.slots"}},
        },
        {
            "name": "BookAppointment",
            "description": "Books an appointment for the caller.",
            "parameters": {
                "type": "object",
                "required": ["date", "time", "service"],
                "properties": {
                    "date": {"type": "string"},
                    "time": {"type": "string"},
                    "service": {"type": "string"},
                },
            },
            "context_parameters": [{"name": "From"}],
            "request": {
                "url": f"{api_url}/bookings",
                "method": "POST",
                "headers": AUTH,
                "body": {
                    "date": "{{input.date}}",
                    "time": "{{input.time}}",
                    "service": "{{input.service}}",
                    "phone": "{{input.From}}",
                },
            },
            "speech": {"on_send": "One moment while I book that."},
            "response": {
                "variables": {"stylist_name": "$.stylist_name", "booking_id": "$.booking_id"}
            },
        },
        {
            "name": "CancelAppointment",
            "description": "Cancels the caller's appointment.",
            "parameters": {
                "type": "object",
                "properties": {"booking_id": {"type": "string"}},
                "required": ["booking_id"],
            },
            "request": {"url": f"{api_url}/cancellations", "method": "POST", "headers": AUTH},
            "speech": {"on_send": True},
        },
    ]


@dataclass(frozen=True)
class Turn:
    says: str
    tool: str
    arguments: dict[str, Any]


SCRIPT = [
    Turn(
        "Hi, can I get a haircut on Saturday?",
        "CheckAvailability",
        {"date": "2026-11-28", "service": "Haircut"},
    ),
    Turn(
        "Ten in the morning works.",
        "BookAppointment",
        {"date": "2026-11-28", "time": "10:00 AM", "service": "Haircut"},
    ),
    Turn("Actually, can you cancel that?", "CancelAppointment", {"booking_id": "bk-1"}),
    Turn("And can you teleport me there?", "TeleportCustomer", {}),
]
