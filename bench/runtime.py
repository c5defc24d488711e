"""A runtime that can wait on 10,000 calls at once: one subscription, a future per event.

The demo's Runtime wakes every waiter on every event (a Condition), which is
quadratic in the calls in flight; here each pending and result resolves its
own future, looked up by (call_id, kind), so the runtime's cost stays
per event and the figures measure the fabric, not the runtime.
"""

import asyncio
import contextlib
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg

from services.demo.runtime import new_traceparent
from shared.contract import subjects
from shared.settings import servers

EVERY_CONVERSATION = f"{subjects.PREFIX}.conv.*.>"
# ``ended`` and ``cancel`` share the subject space and are ignored.
KINDS = ("pending", "progress", "result")
PUBLISH_TIMEOUT_S = 30.0  # JetStream acks slow down while thousands are published at once
Arrival = tuple[float, dict[str, Any]]  # when an event came (perf_counter) and its body


@dataclass(frozen=True)
class Outcome:
    """What the runtime saw of one call, in ms since it began publishing; None: never came."""

    pending_ms: float | None
    result_ms: float | None
    status: str | None  # the result's status: "success" or "error"
    api_ms: float | None  # the executor's own HTTP time (the result's duration_ms)
    code: str | None = None  # an error result's code
    progress_ms: float | None = None  # the first progress

    @property
    def lost(self) -> bool:
        return self.result_ms is None

    @property
    def overhead_ms(self) -> float | None:
        """Time to result that the API did not spend: what the fabric adds."""
        if self.result_ms is None or self.api_ms is None:
            return None
        return self.result_ms - self.api_ms


class BenchRuntime:
    def __init__(self, client: Client, agent_id: str) -> None:
        self.client = client
        self.agent_id = agent_id
        self._waiting: dict[tuple[str, str], asyncio.Future[Arrival]] = {}
        # Every pending seen, warm-up included: each accepted call must reach billing.
        self.accepted = 0

    @classmethod
    async def connect(cls, url: str, agent_id: str, **options: Any) -> "BenchRuntime":
        """Signed in with ``options`` (the runtime user's, from ``BenchFabric``)."""
        runtime = cls(await nats.connect(servers(url), **options), agent_id)
        await runtime.client.subscribe(EVERY_CONVERSATION, cb=runtime._on_event)
        await runtime.client.flush()
        return runtime

    async def _on_event(self, msg: Msg) -> None:
        received = time.perf_counter()
        kind = msg.subject.rsplit(".", 1)[-1]
        if kind not in KINDS:
            return
        if kind == "pending":
            self.accepted += 1
        event = json.loads(msg.data)
        waiter = self._waiting.get((event.get("call_id", ""), kind))
        if waiter is not None and not waiter.done():
            waiter.set_result((received, event))

    async def call(
        self,
        tool: str,
        conversation_id: str,
        arguments: dict[str, Any],
        timeout_s: float,
        agent_id: str | None = None,
        cancel: str | None = None,
    ) -> Outcome:
        """Publish one ToolCall of ``agent_id`` (default: the runtime's agent); wait up to
        ``timeout_s`` for its result (None if none came). ``cancel``: the reason the call is
        cancelled with as its first progress comes."""
        call_id = secrets.token_hex(8)
        loop = asyncio.get_running_loop()
        # Waiting before publishing: a pending may overtake the publish's own ack.
        pending = self._waiting[call_id, "pending"] = loop.create_future()
        result = self._waiting[call_id, "result"] = loop.create_future()
        progress = self._waiting[call_id, "progress"] = loop.create_future()
        sent = time.perf_counter()
        try:
            async with asyncio.timeout(timeout_s):
                with contextlib.suppress(nats.errors.TimeoutError):
                    # Unacknowledged is not unstored: the result may still come.
                    await self._publish(
                        call_id, tool, conversation_id, arguments, agent_id or self.agent_id
                    )
                if cancel is not None:
                    await progress
                    await self._cancel(call_id, conversation_id, cancel)
                await result
        except TimeoutError:
            pass  # reported as lost: no result
        finally:
            for kind in KINDS:
                del self._waiting[call_id, kind]
        return _outcome(sent, pending, progress, result)

    async def _publish(
        self,
        call_id: str,
        tool: str,
        conversation_id: str,
        arguments: dict[str, Any],
        agent_id: str,
    ) -> None:
        call = {
            "call_id": call_id,
            "conversation_id": conversation_id,
            "agent_id": agent_id,
            "tool": tool,
            "arguments": arguments,
        }
        await self.client.jetstream().publish(
            subjects.calls(conversation_id),
            json.dumps(call).encode(),
            timeout=PUBLISH_TIMEOUT_S,
            headers={"Nats-Msg-Id": call_id, "traceparent": new_traceparent()[0]},
        )

    async def _cancel(self, call_id: str, conversation_id: str, reason: str) -> None:
        cancel = {"call_id": call_id, "reason": reason}
        await self.client.jetstream().publish(
            subjects.cancel(conversation_id), json.dumps(cancel).encode(), timeout=PUBLISH_TIMEOUT_S
        )

    async def close(self) -> None:
        await self.client.drain()


def _outcome(
    sent: float,
    pending: asyncio.Future[Arrival],
    progress: asyncio.Future[Arrival],
    result: asyncio.Future[Arrival],
) -> Outcome:
    pending_ms, progress_ms = _since(sent, pending), _since(sent, progress)
    if not result.done():
        return Outcome(pending_ms, None, None, None, progress_ms=progress_ms)
    received, event = result.result()
    code = (event.get("error") or {}).get("code")
    return Outcome(
        pending_ms,
        (received - sent) * 1000,
        event.get("status"),
        event.get("duration_ms"),
        code,
        progress_ms,
    )


def _since(sent: float, event: asyncio.Future[Arrival]) -> float | None:
    """Milliseconds from ``sent`` to the event; None: it never came."""
    return (event.result()[0] - sent) * 1000 if event.done() else None
