"""The catalog: how tool definitions and agents are laid out in the KV bucket.

The registry writes it (SQL stays the source of truth), dispatchers watch it
and keep it in memory, so a call never waits on a registry round trip.
"""

from pydantic import BaseModel

from shared.contract.tools import Tool

DEFAULT_ACCOUNT = "default"


class AgentEntry(BaseModel):
    agent_id: str
    account_id: str = DEFAULT_ACCOUNT
    name: str | None = None


def agent_key(agent_id: str) -> str:
    return f"agents.{agent_id}"


def tool_key(agent_id: str, tool_name: str) -> str:
    return f"tools.{agent_id}.{tool_name}"


def parse_key(key: str) -> tuple[str, str, str | None]:
    """``("agents", agent_id, None)`` or ``("tools", agent_id, tool_name)``."""
    kind, agent_id, *rest = key.split(".", 2)
    return kind, agent_id, rest[0] if rest else None


def encode_tool(tool: Tool) -> bytes:
    return tool.model_dump_json().encode()
