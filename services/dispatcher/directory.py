"""The in-memory catalog of agents and tools, kept current by watching the KV bucket.

A call is resolved from memory; the registry's writes reach every dispatcher
through the bucket's watch within milliseconds.
"""

import logging

from nats.js import JetStreamContext
from pydantic import ValidationError

from shared.calls.binding import Entry
from shared.contract.catalog import DEFAULT_ACCOUNT, AgentEntry, parse_key
from shared.contract.errors import CallRejected, ErrorCode
from shared.contract.subjects import CATALOG_BUCKET
from shared.contract.tools import Tool
from shared.fabric.bucket_follower import BucketFollower

log = logging.getLogger("midcall.dispatcher.directory")


class Directory:
    def __init__(self) -> None:
        self._agents: dict[str, AgentEntry] = {}
        self._tools: dict[tuple[str, str], Entry] = {}
        self._follower = BucketFollower(self.apply)

    def resolve(self, agent_id: str, tool_name: str, within: str | None = None) -> Entry:
        """The agent's tool; ``within`` an account, another account's agent is unknown."""
        entry = self._tools.get((agent_id, tool_name))
        agent = self._agents.get(agent_id)
        unknown = agent is None and entry is None and not self._has_tools(agent_id)
        if unknown or within not in (None, self.account_of(agent_id)):
            raise CallRejected(
                ErrorCode.UNKNOWN_AGENT, f"There is no agent '{agent_id}' configured for tools."
            )
        if entry is None:
            raise CallRejected(
                ErrorCode.UNKNOWN_TOOL, f"The tool '{tool_name}' does not exist for this agent."
            )
        return entry

    def account_of(self, agent_id: str) -> str:
        """The account an agent's calls belong to (an agent never placed in one: default)."""
        agent = self._agents.get(agent_id)
        return agent.account_id if agent is not None else DEFAULT_ACCOUNT

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

    async def follow(self, js: JetStreamContext) -> None:
        """Load the catalog (returning once it is in memory), then keep following it."""
        await self._follower.follow(js, CATALOG_BUCKET)

    def rewatch(self) -> None:
        self._follower.rewatch()

    async def stop(self) -> None:
        await self._follower.stop()
