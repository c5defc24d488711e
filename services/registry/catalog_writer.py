"""Writes agents and tools into the catalog KV bucket that dispatchers watch.

SQL is the source of truth: every write lands there first, then here, and
``sync`` makes the bucket match SQL again when the registry starts.
"""

from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from shared.catalog import AgentEntry, agent_key, encode_tool, tool_key
from shared.subjects import CATALOG_BUCKET
from shared.tools import Tool

# How NATS lays a bucket out: stream KV_<bucket>, one subject per key.
STREAM = f"KV_{CATALOG_BUCKET}"
KEY_PREFIX = f"$KV.{CATALOG_BUCKET}."


class CatalogUnavailable(Exception):
    """The catalog could not be written; the SQL change stands and a retry re-sends it."""


class CatalogWriter:
    def __init__(self, js: JetStreamContext, kv: KeyValue) -> None:
        self._js = js
        self._kv = kv

    @classmethod
    async def open(cls, js: JetStreamContext) -> "CatalogWriter":
        return cls(js, await js.key_value(CATALOG_BUCKET))

    async def put_agent(self, agent: AgentEntry) -> None:
        await self._put(agent_key(agent.agent_id), agent.model_dump_json().encode())

    async def put_tool(self, agent_id: str, tool: Tool) -> None:
        await self._put(tool_key(agent_id, tool.name), encode_tool(tool))

    async def delete_tool(self, agent_id: str, name: str) -> None:
        await self._delete(tool_key(agent_id, name))

    async def sync(self, agents: list[AgentEntry], tools: list[tuple[str, Tool]]) -> None:
        """Write every SQL row into the bucket and delete the keys SQL no longer has."""
        wanted = {agent_key(a.agent_id): a.model_dump_json().encode() for a in agents}
        wanted |= {tool_key(agent_id, t.name): encode_tool(t) for agent_id, t in tools}
        stale = [key for key in await self._stored_keys() - wanted.keys() if await self._live(key)]
        for key, value in wanted.items():
            await self._put(key, value)
        for key in sorted(stale):
            await self._delete(key)

    async def _put(self, key: str, value: bytes) -> None:
        try:
            await self._kv.put(key, value)
        except NatsError as exc:
            raise CatalogUnavailable(f"could not write {key}: {exc!r}") from exc

    async def _delete(self, key: str) -> None:
        try:
            await self._kv.delete(key)
        except NatsError as exc:
            raise CatalogUnavailable(f"could not delete {key}: {exc!r}") from exc

    async def _stored_keys(self) -> set[str]:
        """Every key with a value or a delete marker.

        Not ``KeyValue.keys()``: its watcher can signal "no more keys" before
        the first one arrives, and under load it reports an empty bucket.
        """
        info = await self._js.stream_info(STREAM, subjects_filter=f"{KEY_PREFIX}>")
        return {subject.removeprefix(KEY_PREFIX) for subject in info.state.subjects or {}}

    async def _live(self, key: str) -> bool:
        try:
            await self._kv.get(key)
        except KeyNotFoundError:  # also KeyDeletedError: a delete marker
            return False
        return True
