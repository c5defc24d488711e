"""Agents and their tools in SQL, the registry's source of truth.

Methods are small and synchronous; async callers run them in a thread. Rows
stay inside this module: callers get the canonical ``Tool`` and ``AgentEntry``.
"""

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, Engine, Text, func
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import Insert
from sqlmodel import Field, Session, SQLModel, col, delete, select
from sqlmodel.sql.expression import Select, SelectOfScalar

from shared.contract.catalog import DEFAULT_ACCOUNT, AgentEntry
from shared.contract.events import utcnow
from shared.contract.tools import Tool

# Ids are subject tokens (shared.contract.events.ID_PATTERN), tool names follow TOOL_NAME_PATTERN.
ID_LENGTH = 128
NAME_LENGTH = 64

# Per-account ceilings. Tools and agents are configuration: no account needs more,
# and without them one account could fill the database for every other.
MAX_TOOLS_PER_ACCOUNT = 1000
MAX_AGENTS_PER_ACCOUNT = 1000


@dataclass(frozen=True)
class Quotas:
    """How many tools (over all its agents) and agents one account may have."""

    tools: int
    agents: int


class QuotaExceeded(Exception):
    """A write that would take an account past a quota; nothing of it was stored."""

    def __init__(self, account_id: str, what: str, limit: int, total: int) -> None:
        super().__init__(
            f"account '{account_id}' would have {total} {what}; the limit is {limit} per account"
        )
        self.account_id = account_id
        self.what = what
        self.limit = limit
        self.total = total


class NotTheirs(Exception):
    """The agent belongs to another account than the caller's."""


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
    # The part of the posted document that defined this tool (``dialects.sources``), so a
    # dialect can later be rendered back to its author. Rows written before held the whole
    # document; nothing relies on either.
    source: str | None = Field(default=None, sa_type=Text)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))


class ToolStore:
    """Agents and tools over one SQLAlchemy engine (SQLite or PostgreSQL)."""

    def __init__(self, engine: Engine, quotas: Quotas | None = None) -> None:
        if engine.dialect.name not in ("sqlite", "postgresql"):
            raise RuntimeError(
                f"the registry stores data in SQLite or PostgreSQL, not {engine.dialect.name}"
            )
        self._engine = engine
        self._quotas = quotas or Quotas(MAX_TOOLS_PER_ACCOUNT, MAX_AGENTS_PER_ACCOUNT)

    def put_agent(self, agent: AgentEntry) -> AgentEntry:
        """Create or update the agent; ``QuotaExceeded`` if its account has no room for it.

        An agent moved to another account takes its tools along, so they count there too.
        """
        row = {**agent.model_dump(), "updated_at": utcnow()}
        with Session(self._engine) as session:
            self._lock_account(session, agent.account_id)
            current = session.get(AgentRow, agent.agent_id)
            if current is None or current.account_id != agent.account_id:
                self._check_agents(session, agent.account_id, joining=1)
                moving = len(_agent_tool_names(session, agent.agent_id))
                self._check_tools(session, agent.account_id, moving)
            session.exec(self._upsert(AgentRow, [row], ["agent_id"]))
            session.commit()
        return agent

    def get_agent(self, agent_id: str) -> AgentEntry | None:
        with Session(self._engine) as session:
            row = session.get(AgentRow, agent_id)
            return None if row is None else _agent(row)

    def put_tools(
        self,
        agent_id: str,
        dialect: str,
        tools: list[Tool],
        sources: Sequence[Any] | None = None,
        account_id: str | None = None,
    ) -> AgentEntry:
        """Create or replace ``tools`` by name, for the caller's ``account_id`` (None: the
        admin's, any account): a new agent joins it (the default account for the admin).

        ``sources``: what each tool was parsed from, in the same order. Raises
        ``QuotaExceeded`` (storing nothing) when the account would outgrow a quota,
        and ``NotTheirs`` when the agent belongs to another account.
        """
        if sources is not None and len(sources) != len(tools):
            raise ValueError(f"{len(sources)} sources for {len(tools)} tools")
        with Session(self._engine) as session:
            agent = self._agent_for_tools(session, agent_id, account_id or DEFAULT_ACCOUNT)
            if account_id is not None and agent.account_id != account_id:
                raise NotTheirs(agent_id)
            replaced = _agent_tool_names(session, agent_id) & {tool.name for tool in tools}
            self._check_tools(session, agent.account_id, len(tools) - len(replaced))
            if tools:
                posted = sources if sources is not None else [None] * len(tools)
                rows = [
                    _tool_row(agent_id, dialect, tool, _source_text(source))
                    for tool, source in zip(tools, posted, strict=True)
                ]
                session.exec(self._upsert(ToolRow, rows, ["agent_id", "name"]))
            entry = _agent(agent)
            session.commit()
        return entry

    def list_tools(self, agent_id: str) -> list[Tool]:
        query = self._owned().where(col(ToolRow.agent_id) == agent_id)
        with Session(self._engine) as session:
            rows = session.exec(query.order_by(col(ToolRow.name))).all()
        return [_owned_tool(definition, account_id) for _, definition, account_id in rows]

    def get_tool(self, agent_id: str, name: str) -> Tool | None:
        query = self._owned().where(col(ToolRow.agent_id) == agent_id, col(ToolRow.name) == name)
        with Session(self._engine) as session:
            row = session.exec(query).first()
        return None if row is None else _owned_tool(row[1], row[2])

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
        with Session(self._engine) as session:
            rows = session.exec(self._owned()).all()
        return [(agent_id, _owned_tool(d, account_id)) for agent_id, d, account_id in rows]

    @staticmethod
    def _owned() -> Select[str, str, str]:
        # A tool's owner is its agent's account as it is now (an agent may move), so
        # it is read from the agent, never kept in the definition.
        return select(ToolRow.agent_id, ToolRow.definition, AgentRow.account_id).join(
            AgentRow, col(AgentRow.agent_id) == col(ToolRow.agent_id)
        )

    def _agent_for_tools(self, session: Session, agent_id: str, account_id: str) -> AgentRow:
        """The agent, first added to ``account_id`` (within its quota) if new."""
        agent = session.get(AgentRow, agent_id)
        self._lock_account(session, account_id if agent is None else agent.account_id)
        if agent is None:
            self._check_agents(session, account_id, joining=1)
            session.exec(self._insert_missing_agent(agent_id, account_id))
            agent = session.get(AgentRow, agent_id)
            assert agent is not None  # just inserted, or by a concurrent writer
        return agent

    def _check_agents(self, session: Session, account_id: str, joining: int) -> None:
        current = _count(
            session, select(func.count()).where(col(AgentRow.account_id) == account_id)
        )
        _within_quota(account_id, "agents", current, current + joining, self._quotas.agents)

    def _check_tools(self, session: Session, account_id: str, adding: int) -> None:
        query = (
            select(func.count())
            .select_from(ToolRow)
            .join(AgentRow, col(AgentRow.agent_id) == col(ToolRow.agent_id))
            .where(col(AgentRow.account_id) == account_id)
        )
        current = _count(session, query)
        _within_quota(account_id, "tools", current, current + adding, self._quotas.tools)

    def _lock_account(self, session: Session, account_id: str) -> None:
        # Counting and writing must not interleave with another registry's writes to the
        # account. PostgreSQL: a lock per account until commit. SQLite: one registry,
        # whose API already makes its writes one at a time.
        if self._engine.dialect.name == "postgresql":
            session.exec(select(func.pg_advisory_xact_lock(func.hashtext(account_id))))

    def _insert_missing_agent(self, agent_id: str, account_id: str) -> Insert:
        row = {"agent_id": agent_id, "account_id": account_id, "updated_at": utcnow()}
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


def _agent_tool_names(session: Session, agent_id: str) -> set[str]:
    query = select(ToolRow.name).where(col(ToolRow.agent_id) == agent_id)
    return set(session.exec(query).all())


def _count(session: Session, query: SelectOfScalar[int]) -> int:
    return session.exec(query).one()


def _within_quota(account_id: str, what: str, current: int, after: int, limit: int) -> None:
    # Only growth past the limit is refused: an account already over a quota it
    # predates can still replace and delete what it has.
    if after > limit and after > current:
        raise QuotaExceeded(account_id, what, limit, after)


def _source_text(source: Any) -> str | None:
    return None if source is None else json.dumps(source, ensure_ascii=False)


def _owned_tool(definition: str, account_id: str) -> Tool:
    return Tool.model_validate_json(definition).model_copy(update={"owner_account": account_id})


def _tool_row(agent_id: str, dialect: str, tool: Tool, source: str | None) -> dict[str, Any]:
    return {
        "agent_id": agent_id,
        "name": tool.name,
        "dialect": dialect,
        # Who registered it (``platform``) is kept; the owner is read from the agent.
        "definition": tool.model_dump_json(exclude={"owner_account"}),
        "source": source,
        "updated_at": utcnow(),
    }
