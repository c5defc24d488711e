"""A voice runtime's side of the contract, in plain nats-py: publish calls, hear events.

This is what a runtime integrating Midcall writes; the demo and the tests use
it so that they exercise the public subjects only.
"""

import asyncio
import json
import secrets
import time
from collections import defaultdict
from typing import Any

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg

from shared.settings import servers


def new_traceparent() -> tuple[str, str]:
    """A fresh sampled W3C traceparent and its trace id, as a runtime that traces sends."""
    trace_id = secrets.token_hex(16)
    return f"00-{trace_id}-{secrets.token_hex(8)}-01", trace_id


class Runtime:
    def __init__(self, client: Client) -> None:
        self.client = client
        self.events: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self._first: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._changed = asyncio.Condition()

    @classmethod
    async def connect(cls, url: str, **options: Any) -> "Runtime":
        """``options``: nats.connect's, e.g. the runtime's user, password and inbox prefix."""
        return cls(await nats.connect(servers(url), **options))

    async def listen(self, conversation_id: str) -> None:
        await self.client.subscribe(f"midcall.conv.{conversation_id}.>", cb=self._on_event)
        await self.client.flush()

    async def _on_event(self, msg: Msg) -> None:
        event = json.loads(msg.data)
        event["_kind"] = msg.subject.rsplit(".", 1)[-1]
        event["_received"] = time.perf_counter()
        async with self._changed:
            conversation = event.get("conversation_id", "")
            self.events[conversation].append(event)
            self._first.setdefault((conversation, event["_kind"], event.get("call_id", "")), event)
            self._changed.notify_all()

    async def call(
        self, call: dict[str, Any], traceparent: str | None = None, msg_id: str | None = None
    ) -> None:
        headers = {"Nats-Msg-Id": msg_id or call["call_id"]}
        if traceparent:
            headers["traceparent"] = traceparent
        js = self.client.jetstream()
        await js.publish(
            f"midcall.calls.{call['conversation_id']}", json.dumps(call).encode(), headers=headers
        )

    async def wait_for(
        self, conversation_id: str, kind: str, call_id: str, timeout_s: float = 15.0
    ) -> dict[str, Any]:
        """The first event of ``kind`` (pending, result) for the call."""

        key = (conversation_id, kind, call_id)
        async with asyncio.timeout(timeout_s), self._changed:
            await self._changed.wait_for(lambda: key in self._first)
        return self._first[key]

    async def end(self, conversation_id: str) -> None:
        js = self.client.jetstream()
        await js.publish(
            f"midcall.conv.{conversation_id}.ended",
            json.dumps({"conversation_id": conversation_id}).encode(),
        )

    async def close(self) -> None:
        await self.client.drain()
