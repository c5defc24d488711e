"""Writes agents and tools into the catalog KV bucket that dispatchers watch."""

from nats.js import JetStreamContext

from services.registry.bucket_mirror import BucketMirror
from shared.contract.catalog import AgentEntry, agent_key, encode_tool, tool_key
from shared.contract.subjects import CATALOG_BUCKET
from shared.contract.tools import Tool


class CatalogWriter:
    def __init__(self, mirror: BucketMirror) -> None:
        self._mirror = mirror

    @classmethod
    async def open(cls, js: JetStreamContext) -> "CatalogWriter":
        return cls(await BucketMirror.open(js, CATALOG_BUCKET))

    async def put_agent(self, agent: AgentEntry) -> None:
        await self._mirror.put(agent_key(agent.agent_id), agent.model_dump_json().encode())

    async def put_tool(self, agent_id: str, tool: Tool) -> None:
        await self._mirror.put(tool_key(agent_id, tool.name), encode_tool(tool))

    async def delete_tool(self, agent_id: str, name: str) -> None:
        await self._mirror.delete(tool_key(agent_id, name))

    async def sync(self, agents: list[AgentEntry], tools: list[tuple[str, Tool]]) -> None:
        """Make the bucket hold exactly SQL's agents and tools."""
        wanted = {agent_key(a.agent_id): a.model_dump_json().encode() for a in agents}
        wanted |= {tool_key(agent_id, t.name): encode_tool(t) for agent_id, t in tools}
        await self._mirror.sync(wanted)
