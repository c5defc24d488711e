"""Agents and their tools in SQL, the registry's source of truth.

Methods are small and synchronous; async callers run them in a thread. Rows
stay inside this module: callers get the canonical ``Tool`` and ``AgentEntry``.
"""

import json
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, Engine, Text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import Insert
from sqlmodel import Field, Session, SQLModel, col, delete, select

from shared.catalog import DEFAULT_ACCOUNT, AgentEntry
from shared.events import utcnow
from shared.tools import Tool

# Ids are subject tokens (shared.events.ID_PATTERN), tool names follow TOOL_NAME_PATTERN.
ID_LENGTH = 128
NAME_LENGTH = 64


class AgentRow(SQLModel, table=True):
    __tablename__ = "agents"

    agent_id: str = Field(primary_key=True, max_length=ID_LENGTH)
    account_id: str = Field(max_length=ID_LENGTH)
    name: str | None = None
    updated_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))


class ToolRow(SQLModel, table=True):
    __tablename__ = "tools"

    agent_id: str = Field(primary_key=True, max_length=ID_LENGTH, foreign_key="agents.agent_id")
    name: str = Field(primary_key=True, max_length=NAME_LENGTH)
    dialect: str = Field(max_length=32)
    # The canonical tool as JSON: what every reader gets back.
    definition: str = Field(sa_type=Text)
    # The document as posted, so a dialect can later be rendered back to its author.
    source: str | None = Field(default=None, sa_type=Text)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))


class ToolStore:
    """Agents and tools over one SQLAlchemy engine (SQLite or PostgreSQL)."""

    def __init__(self, engine: Engine) -> None:
        if engine.dialect.name not in ("sqlite", "postgresql"):
            raise RuntimeError(
                f"the registry stores data in SQLite or PostgreSQL, not {engine.dialect.name}"
            )
        self._engine = engine

    def put_agent(self, agent: AgentEntry) -> AgentEntry:
        row = {**agent.model_dump(), "updated_at": utcnow()}
        with Session(self._engine) as session:
            session.exec(self._upsert(AgentRow, [row], ["agent_id"]))
            session.commit()
        return agent

    def get_agent(self, agent_id: str) -> AgentEntry | None:
        with Session(self._engine) as session:
            row = session.get(AgentRow, agent_id)
            return None if row is None else _agent(row)

    def put_tools(
        self, agent_id: str, dialect: str, tools: list[Tool], source: Any = None
    ) -> AgentEntry:
        """Create or replace ``tools`` by name; a new agent joins the default account."""
        with Session(self._engine) as session:
            session.exec(self._insert_missing_agent(agent_id))
            if tools:
                posted = None if source is None else json.dumps(source, ensure_ascii=False)
                rows = [_tool_row(agent_id, dialect, tool, posted) for tool in tools]
                session.exec(self._upsert(ToolRow, rows, ["agent_id", "name"]))
            session.commit()
            agent = session.get(AgentRow, agent_id)
            assert agent is not None  # inserted above when missing
            return _agent(agent)

    def list_tools(self, agent_id: str) -> list[Tool]:
        query = select(ToolRow.definition).where(col(ToolRow.agent_id) == agent_id)
        with Session(self._engine) as session:
            definitions = session.exec(query.order_by(col(ToolRow.name))).all()
        return [Tool.model_validate_json(d) for d in definitions]

    def get_tool(self, agent_id: str, name: str) -> Tool | None:
        with Session(self._engine) as session:
            row = session.get(ToolRow, (agent_id, name))
            return None if row is None else Tool.model_validate_json(row.definition)

    def delete_tool(self, agent_id: str, name: str) -> bool:
        """Whether the tool existed."""
        statement = delete(ToolRow).where(
            col(ToolRow.agent_id) == agent_id, col(ToolRow.name) == name
        )
        with Session(self._engine) as session:
            deleted = session.exec(statement).rowcount
            session.commit()
        return bool(deleted)

    def all_agents(self) -> list[AgentEntry]:
        with Session(self._engine) as session:
            return [_agent(row) for row in session.exec(select(AgentRow)).all()]

    def all_tools(self) -> list[tuple[str, Tool]]:
        """Every tool with its agent id, for syncing the catalog."""
        query = select(ToolRow.agent_id, ToolRow.definition)
        with Session(self._engine) as session:
            rows = session.exec(query).all()
        return [(agent_id, Tool.model_validate_json(d)) for agent_id, d in rows]

    def _insert_missing_agent(self, agent_id: str) -> Insert:
        row = {"agent_id": agent_id, "account_id": DEFAULT_ACCOUNT, "updated_at": utcnow()}
        return self._insert(AgentRow).values([row]).on_conflict_do_nothing()

    def _upsert(self, model: type[SQLModel], rows: list[dict[str, Any]], keys: list[str]) -> Insert:
        # INSERT .. ON CONFLICT DO UPDATE: one statement, safe against a concurrent insert,
        # and spelled the same way by both dialects we support.
        statement = self._insert(model).values(rows)
        updated = {name: statement.excluded[name] for name in rows[0] if name not in keys}
        return statement.on_conflict_do_update(index_elements=keys, set_=updated)

    def _insert(self, model: type[SQLModel]) -> postgresql.Insert | sqlite.Insert:
        if self._engine.dialect.name == "postgresql":
            return postgresql.insert(model)
        return sqlite.insert(model)


def _agent(row: AgentRow) -> AgentEntry:
    return AgentEntry(agent_id=row.agent_id, account_id=row.account_id, name=row.name)


def _tool_row(agent_id: str, dialect: str, tool: Tool, source: str | None) -> dict[str, Any]:
    return {
        "agent_id": agent_id,
        "name": tool.name,
        "dialect": dialect,
        "definition": tool.model_dump_json(),
        "source": source,
        "updated_at": utcnow(),
    }
