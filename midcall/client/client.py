"""``MidcallClient``: place calls, hear their pending, progress and one result, end conversations.

One NATS connection and one reader per process, whatever the number of
conversations. The shared ``runtime`` user reads through one ordered
JetStream consumer on ``MIDCALL_CONV`` (under the ``midcall`` domain),
which nats-py restarts from the last event it delivered after a reconnect,
so events published while the connection was down still arrive, once each.
An account's runtime credentials read through one core subscription, as the
contract grants them for now; after a reconnect, and for a call re-issued by
its id, the client asks for each waiting call's stored events
(``midcall.conv.<conversation>.stored``), so what was published meanwhile
still arrives, once each.
"""

import asyncio
import json
import secrets
from collections import OrderedDict
from functools import partial
from types import TracebackType
from typing import Any

import httpx
import nats
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import DeliverPolicy, PubAck

from midcall.client.calls import Call
from midcall.client.credentials import Credentials
from midcall.client.tools import AgentTools, ToolsWatch
from shared.contract import subjects
from shared.contract.events import (
    CallCancel,
    ConversationEnded,
    StoredEvents,
    StoredEventsRequest,
    ToolCall,
    ToolCallPending,
    ToolCallProgress,
    ToolCallResult,
)
from shared.fabric.liveness import SILENCE_DETECTION
from shared.fabric.outages import FIRST_TRY_S, patiently
from shared.security.api_keys import bearer

DOMAIN = "midcall"
# Calls kept after their result, so that one re-issued with its id gets the same handle.
KEPT_CALLS = 10_000
EVENTS = frozenset({"pending", "progress", "result"})
TOOLS_REFRESH_S = 5.0
# The reader's consumer is found gone (a nats-server restart) after two missed heartbeats,
# and made again from the last event it delivered.
HEARTBEAT_S = 1.0
# A re-issued call's catch-up stops when the stream has had nothing for it this long.
CATCH_UP_IDLE_S = 2.0
# Asking for a call's stored events (account credentials): each try's wait, and tries.
STORED_WAIT_S = 2.0
# A call not confirmed within a try (shared.fabric.outages: 2 s, then 0.5 s) is sent
# again, for as long as the patience lasts (a cluster elects a stream's new leader within
# about 10 s); then the call raises.
CALL_PATIENCE_S = 30.0
STORED_TRIES = 3


class MidcallClient:
    """``async with MidcallClient(url, credentials) as mc:`` then ``await mc.call(...)``.

    ``url``: one server, or several comma-separated (any of a cluster's nodes).
    ``registry_url`` and the account's ``api_key``: where ``tools()`` reads the
    agents' tools, asked again every ``tools_refresh_s``.
    """

    def __init__(
        self,
        url: str,
        credentials: Credentials,
        *,
        registry_url: str | None = None,
        api_key: str | None = None,
        tools_refresh_s: float = TOOLS_REFRESH_S,
    ) -> None:
        self.servers = [server.strip() for server in url.split(",") if server.strip()]
        self.credentials = credentials
        self.registry_url = registry_url
        self.api_key = api_key
        self.tools_refresh_s = tools_refresh_s
        self._http: httpx.AsyncClient | None = None
        self._watches: dict[str, ToolsWatch] = {}
        self._watching = asyncio.Lock()
        self._nc: Client | None = None
        self._events: Subscription | None = None
        self._calls: OrderedDict[tuple[str, str], Call] = OrderedDict()
        self._catching_up: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> "MidcallClient":
        self._nc = await nats.connect(
            servers=self.servers,
            max_reconnect_attempts=-1,
            reconnected_cb=self._reconnected,
            **SILENCE_DETECTION,
            **self.credentials.connect_options(),
        )
        if self.credentials.catches_up:
            self._events = await self._nc.jetstream(domain=DOMAIN).subscribe(
                subjects.ALL_CONV,
                stream=subjects.CONV_STREAM,
                ordered_consumer=True,
                deliver_policy=DeliverPolicy.NEW,
                idle_heartbeat=HEARTBEAT_S,
                cb=self._heard,
            )
        else:
            self._events = await self._nc.subscribe(subjects.ALL_CONV, cb=self._heard)
        if self.registry_url is not None:
            headers = bearer(self.api_key) if self.api_key else {}
            self._http = httpx.AsyncClient(base_url=self.registry_url, headers=headers)
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for task in self._catching_up:
            task.cancel()
        await asyncio.gather(*self._catching_up, return_exceptions=True)
        for watch in self._watches.values():
            await watch.stop()
        if self._http is not None:
            await self._http.aclose()
        if self._nc is not None:
            await self._nc.drain()

    @property
    def nc(self) -> Client:
        if self._nc is None:
            raise RuntimeError("use MidcallClient in `async with`")
        return self._nc

    async def call(
        self,
        agent_id: str,
        conversation_id: str,
        tool: str,
        arguments: dict[str, Any] | None = None,
        *,
        context: dict[str, Any] | None = None,
        deadline: float | None = None,
        call_id: str | None = None,
        traceparent: str | None = None,
    ) -> Call:
        """Place a call; its handle gives its pending, its progress and its result.

        ``deadline``: seconds the caller may wait (the tool's own when None).
        ``call_id``: given when re-issuing a call after a reconnect or a restart: the
        fabric runs it once, and the handle hears the result it already has. Unique
        within its conversation: another conversation's call of the same id is its own.
        """
        placed = ToolCall(
            call_id=call_id or f"call-{secrets.token_hex(8)}",
            conversation_id=conversation_id,
            agent_id=agent_id,
            tool=tool,
            arguments=arguments or {},
            context=context or {},
            deadline_ms=None if deadline is None else max(1, round(deadline * 1000)),
        )
        key = (conversation_id, placed.call_id)
        known = self._calls.get(key)
        if known is not None:
            return known
        cancel = partial(self.cancel, conversation_id, placed.call_id)
        handle = self._calls[key] = Call(placed.call_id, conversation_id, tool, cancel)
        self._forget_old()
        # JetStream de-duplicates a whole stream's calls, every account's, and a call id is
        # unique within its conversation only: the same id in two conversations (or two
        # accounts' conversations of one id) is two calls.
        scope = [self.credentials.account_id] if self.credentials.account_id else []
        headers = {"Nats-Msg-Id": "/".join([*scope, conversation_id, placed.call_id])}
        if traceparent:
            headers["traceparent"] = traceparent
        body = placed.model_dump_json(exclude_none=True).encode()

        async def publish() -> PubAck:
            return await self.nc.jetstream().publish(
                subjects.calls(conversation_id), body, timeout=FIRST_TRY_S, headers=headers
            )

        # Through a NATS outage or a cluster's leader election: the same Nats-Msg-Id each
        # time, so a copy JetStream did store is kept once.
        try:
            ack = await patiently(publish, CALL_PATIENCE_S, target=subjects.CALLS_STREAM)
        except BaseException:
            # Not known to be placed: a call() with its id then publishes it again (kept once
            # if this copy was stored) rather than hand back a handle nothing may answer.
            if self._calls.get(key) is handle:
                del self._calls[key]
            raise
        if ack.duplicate:
            self._start_catching_up(handle)
        return handle

    async def tools(self, agent_id: str) -> AgentTools:
        """The agent's tools in each LLM provider's shape, kept current from then on.

        Raises ``ToolsUnavailable`` when the registry refuses (an unknown agent, or
        another account's, which the account's key does not see).
        """
        if self._http is None:
            raise RuntimeError("tools() needs MidcallClient(..., registry_url=..., api_key=...)")
        async with self._watching:
            watch = self._watches.get(agent_id)
            if watch is None or watch.tools is None:
                watch = ToolsWatch(self._http, agent_id, self.tools_refresh_s)
                await watch.start()
                self._watches[agent_id] = watch
        assert watch.tools is not None
        return watch.tools

    async def end(self, conversation_id: str) -> None:
        """The conversation is over: its calls still running are cancelled, billing closes it."""
        ended = ConversationEnded(conversation_id=conversation_id)
        await self.nc.jetstream().publish(
            subjects.ended(conversation_id), ended.model_dump_json().encode()
        )

    async def cancel(self, conversation_id: str, call_id: str, reason: str | None = None) -> None:
        """Cancel a call by its id, as its handle's ``cancel`` does: for a call whose placing
        was interrupted, which may have been stored with no handle given back. A call
        already answered keeps its result; one placed with that id in the next two minutes
        is answered ``cancelled`` without running."""
        asked = CallCancel(call_id=call_id, reason=reason)
        await self.nc.jetstream().publish(
            subjects.cancel(conversation_id), asked.model_dump_json(exclude_none=True).encode()
        )

    def _start_catching_up(self, handle: Call) -> None:
        if self.credentials.catches_up:
            work = self._catch_up(handle.conversation_id, handle)
        else:
            work = self._ask_stored(handle)
        task = asyncio.create_task(work)
        self._catching_up.add(task)
        task.add_done_callback(self._catching_up.discard)

    async def _reconnected(self) -> None:
        # The ordered consumer resumes by itself; a core subscription missed what came
        # while the connection was down.
        if not self.credentials.catches_up:
            for handle in list(self._calls.values()):
                if not handle.done:
                    self._start_catching_up(handle)

    async def _ask_stored(self, handle: Call) -> None:
        """The call's events as stored, asked for (account credentials): what the core
        subscription missed. The handle keeps the first of each."""
        asked = StoredEventsRequest(call_id=handle.call_id).model_dump_json().encode()
        for _ in range(STORED_TRIES):
            try:
                reply = await self.nc.request(
                    subjects.stored(handle.conversation_id), asked, timeout=STORED_WAIT_S
                )
            except nats.errors.Error:
                continue  # no reply (the registry restarting, a reconnect): asked again
            answer = StoredEvents.model_validate_json(reply.data)
            for stored in answer.events:
                self._route(stored.kind, stored.event)
            return

    async def _catch_up(self, conversation_id: str, handle: Call) -> None:
        """The conversation's stored events, read until the re-issued call's result: those
        published before this process connected are not on its reader's way. Events
        published later reach the reader too; the handle keeps the first of each."""
        js = self.nc.jetstream(domain=DOMAIN)
        subscription = await js.subscribe(
            subjects.conversation(conversation_id),
            stream=subjects.CONV_STREAM,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.ALL,
        )
        try:
            while not handle.done:
                msg = await subscription.next_msg(timeout=CATCH_UP_IDLE_S)
                await self._heard(msg)
                if msg.metadata.num_pending == 0:
                    return  # all there is so far: the reader has what comes next
        except nats.errors.TimeoutError:
            return  # nothing stored yet: the reader hears it as it is published
        finally:
            await subscription.unsubscribe()

    async def _heard(self, msg: Msg) -> None:
        kind = msg.subject.rpartition(".")[2]
        if kind not in EVENTS:
            return
        try:
            event = json.loads(msg.data)
        except ValueError:
            return  # not an event of the contract: nothing of ours
        self._route(kind, event)

    def _route(self, kind: str, event: Any) -> None:
        """An event of ``kind`` (pending, progress, result) to its call's handle, if ours."""
        try:
            handle = self._calls.get((event["conversation_id"], event["call_id"]))
        except (KeyError, TypeError):
            return  # not an event of the contract: nothing of ours
        if handle is None:
            return  # another process's call
        if kind == "pending":
            handle.heard_pending(ToolCallPending.model_validate(event))
        elif kind == "result":
            handle.heard_result(ToolCallResult.model_validate(event))
        else:
            handle.heard_progress(ToolCallProgress.model_validate(event))

    def _forget_old(self) -> None:
        """Answered calls beyond the newest ``KEPT_CALLS``; a call still waiting is kept."""
        while len(self._calls) > KEPT_CALLS:
            key, oldest = next(iter(self._calls.items()))
            if not oldest.done:
                self._calls.move_to_end(key)
                return
            del self._calls[key]
