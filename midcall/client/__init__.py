"""Midcall's client for voice runtimes: calls that never block the conversation.

async with MidcallClient(url, Credentials.shared(password)) as mc:
    call = await mc.call("salon-bot", "conv-42", "BookAppointment", {"time": "10:00"})
    pending = await call.pending()  # say pending.speech now
    async for update in call.progress():  # a long call's API reporting, until its result
        ...  # say update.message if update.speak
    result = await call.result()  # or CallFailed's subclass for its error code
"""

from midcall.client.calls import Call
from midcall.client.client import MidcallClient
from midcall.client.credentials import Credentials
from midcall.client.errors import (
    BlockedDestination,
    CallFailed,
    Cancelled,
    ConnectionFailed,
    HttpError,
    Internal,
    InvalidArguments,
    InvalidResponse,
    MissingContextParameter,
    RepeatedCall,
    Timeout,
    ToolError,
    UnknownAgent,
    UnknownTool,
)
from midcall.client.tools import AgentTools, ToolsUnavailable

__all__ = [
    "AgentTools",
    "BlockedDestination",
    "Call",
    "CallFailed",
    "Cancelled",
    "ConnectionFailed",
    "Credentials",
    "HttpError",
    "Internal",
    "InvalidArguments",
    "InvalidResponse",
    "MidcallClient",
    "MissingContextParameter",
    "RepeatedCall",
    "Timeout",
    "ToolError",
    "ToolsUnavailable",
    "UnknownAgent",
    "UnknownTool",
]
