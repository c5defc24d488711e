"""The in-memory catalog of agents and tools, kept current by watching the KV bucket.

A call is resolved from memory; the registry's writes reach every dispatcher
through the bucket's watch within milliseconds.
"""

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from jsonschema import Draft202012Validator
from nats.errors import Error as NatsError
from nats.js.kv import KeyValue
from pydantic import ValidationError

from shared.catalog import AgentEntry, parse_key
from shared.errors import CallRejected, ErrorCode
from shared.tools import Tool

log = logging.getLogger("midcall.dispatcher.directory")
DELETIONS = ("DEL", "PURGE")


@dataclass(frozen=True)
class Entry:
    tool: Tool
    validator: Draft202012Validator

    @classmethod
    def of(cls, tool: Tool) -> "Entry":
        return cls(tool, Draft202012Validator(tool.parameters))


class Directory:
    def __init__(self) -> None:
        self._agents: dict[str, AgentEntry] = {}
        self._tools: dict[tuple[str, str], Entry] = {}
        self._task: asyncio.Task[None] | None = None
        self._rewatch: asyncio.Task[None] | None = None
        self._kv: KeyValue | None = None
        self._watcher: KeyValue.KeyWatcher | None = None

    def resolve(self, agent_id: str, tool_name: str) -> tuple[AgentEntry, Entry]:
        entry = self._tools.get((agent_id, tool_name))
        agent = self._agents.get(agent_id)
        if agent is None and entry is None and not self._has_tools(agent_id):
            raise CallRejected(
                ErrorCode.UNKNOWN_AGENT, f"There is no agent '{agent_id}' configured for tools."
            )
        if entry is None:
            raise CallRejected(
                ErrorCode.UNKNOWN_TOOL, f"The tool '{tool_name}' does not exist for this agent."
            )
        return agent or AgentEntry(agent_id=agent_id), entry

    def _has_tools(self, agent_id: str) -> bool:
        return any(agent == agent_id for agent, _ in self._tools)

    def apply(self, key: str, value: bytes | None) -> None:
        """One KV change: a put (value) or a delete (None)."""
        kind, agent_id, tool_name = parse_key(key)
        try:
            if kind == "agents":
                self._apply_agent(agent_id, value)
            elif kind == "tools" and tool_name:
                self._apply_tool(agent_id, tool_name, value)
        except ValidationError as exc:
            # A definition this version cannot read must not take the others down.
            log.error("ignoring catalog entry %s: %s", key, exc)

    def _apply_agent(self, agent_id: str, value: bytes | None) -> None:
        if value is None:
            self._agents.pop(agent_id, None)
        else:
            self._agents[agent_id] = AgentEntry.model_validate_json(value)

    def _apply_tool(self, agent_id: str, name: str, value: bytes | None) -> None:
        if value is None:
            self._tools.pop((agent_id, name), None)
            return
        self._tools[(agent_id, name)] = Entry.of(Tool.model_validate_json(value))

    async def follow(self, kv: KeyValue, loaded_at: int) -> None:
        """Load the bucket, return once every entry up to ``loaded_at`` is in, keep following.

        ``loaded_at`` is the bucket stream's last sequence, read before watching.
        nats-py's "initial values done" marker can arrive before the values on a
        busy machine, so it is not trusted.
        """
        self._kv = kv
        loaded = asyncio.Event()
        if loaded_at == 0:
            loaded.set()
        await self._watch(loaded, loaded_at)
        await loaded.wait()

    def rewatch(self) -> None:
        """After a reconnect: the watch's consumer may be gone with the old server, so the
        bucket is read again from the latest value of every key (deletions included)."""
        if self._kv is not None:
            self._rewatch = asyncio.create_task(self._watch(asyncio.Event(), 0))

    async def _watch(self, loaded: asyncio.Event, loaded_at: int) -> None:
        assert self._kv is not None
        watcher = await self._kv.watchall()
        await self._stop_watching()
        self._watcher = watcher
        self._task = asyncio.create_task(self._consume(watcher, loaded, loaded_at))

    async def _consume(
        self, watcher: KeyValue.KeyWatcher, loaded: asyncio.Event, loaded_at: int
    ) -> None:
        async for entry in watcher:
            if entry is None:  # nats-py's marker; see follow()
                continue
            self.apply(entry.key, None if entry.operation in DELETIONS else entry.value)
            if entry.revision is not None and entry.revision >= loaded_at:
                loaded.set()

    async def stop(self) -> None:
        if self._rewatch is not None:
            self._rewatch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._rewatch
        await self._stop_watching()

    async def _stop_watching(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._watcher is not None:
            with contextlib.suppress(NatsError):  # its consumer may be gone with the server
                await self._watcher.stop()  # type: ignore[no-untyped-call]
