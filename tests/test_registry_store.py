"""The registry's SQL store, on SQLite and PostgreSQL."""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select

from services.registry.store import ToolRow, ToolStore
from shared.contract.catalog import AgentEntry
from shared.contract.tools import Tool
from shared.process.storage import build_engine
from shared.settings import Settings


@pytest.fixture
def store(database_url: str, tmp_path: Path) -> Iterator[ToolStore]:
    engine = build_engine(Settings(database_url=database_url, data_dir=tmp_path))
    yield ToolStore(engine)
    engine.dispose()


def make_tool(name: str, url: str = "https://api.example.com/book", **extra: Any) -> Tool:
    return Tool.model_validate({"name": name, "request": {"url": url}, **extra})


def owned(tool: Tool, account_id: str = "default") -> Tool:
    """A tool as the store reads it back: owned by its agent's account."""
    return tool.model_copy(update={"owner_account": account_id})


def test_an_agent_first_seen_with_tools_belongs_to_the_default_account(store: ToolStore) -> None:
    agent = store.put_tools("salon-bot", "midcall", [make_tool("Book")])

    assert agent == AgentEntry(agent_id="salon-bot", account_id="default", name=None)
    assert store.get_agent("salon-bot") == agent


def test_put_agent_creates_then_updates(store: ToolStore) -> None:
    store.put_agent(AgentEntry(agent_id="salon-bot", account_id="acme", name="Salon"))
    store.put_agent(AgentEntry(agent_id="salon-bot", account_id="globex", name=None))

    assert store.get_agent("salon-bot") == AgentEntry(agent_id="salon-bot", account_id="globex")
    assert store.get_agent("nobody") is None


def test_put_tools_keeps_the_account_of_an_existing_agent(store: ToolStore) -> None:
    store.put_agent(AgentEntry(agent_id="salon-bot", account_id="acme", name="Salon"))

    agent = store.put_tools("salon-bot", "midcall", [make_tool("Book")])

    assert agent == AgentEntry(agent_id="salon-bot", account_id="acme", name="Salon")


def test_put_tools_replaces_tools_by_name_and_keeps_the_others(store: ToolStore) -> None:
    store.put_tools("salon-bot", "midcall", [make_tool("Book"), make_tool("Cancel")])
    replacement = make_tool("Book", "https://v2.example.com/book", description="v2")

    store.put_tools("salon-bot", "midcall", [replacement])

    assert store.list_tools("salon-bot") == [owned(replacement), owned(make_tool("Cancel"))]
    assert store.get_tool("salon-bot", "Book") == owned(replacement)


def test_tools_are_listed_by_name_and_scoped_to_their_agent(store: ToolStore) -> None:
    store.put_tools("a", "midcall", [make_tool("Zeta"), make_tool("Alpha")])
    store.put_tools("b", "midcall", [make_tool("Alpha")])

    assert [t.name for t in store.list_tools("a")] == ["Alpha", "Zeta"]
    assert [t.name for t in store.list_tools("b")] == ["Alpha"]
    assert store.list_tools("nobody") == []
    assert store.get_tool("b", "Zeta") is None


def test_a_tool_round_trips_every_field(store: ToolStore) -> None:
    tool = Tool.model_validate(
        {
            "name": "BookAppointment",
            "description": "Books an appointment",
            "parameters": {
                "type": "object",
                "properties": {"date": {"type": "string"}},
                "required": ["date"],
            },
            "context_parameters": [{"name": "From"}],
            "request": {
                "url": "https://api.example.com/book",
                "method": "post",
                "headers": {"Authorization": "Bearer {{secrets.KEY}}"},
                "body": {"date": "{{input.date}}", "from": "{{context.From}}"},
                "timeout_s": 5,
                "retry": {"attempts": 3, "on": ["timeout"]},
            },
            "speech": {"on_send": "One moment.", "muted": True},
            "response": {"variables": {"stylist": "$.stylist_name"}},
        }
    )

    store.put_tools("salon-bot", "midcall", [tool])

    assert store.get_tool("salon-bot", "BookAppointment") == owned(tool)


def test_the_dialect_and_the_tools_own_source_are_kept(
    store: ToolStore, database_url: str, tmp_path: Path
) -> None:
    source = {"name": "Book", "request": {"url": "https://x.example/é"}}

    store.put_tools("salon-bot", "midcall", [make_tool("Book")], [source])

    engine = build_engine(Settings(database_url=database_url, data_dir=tmp_path))
    with Session(engine) as session:
        row = session.exec(select(ToolRow)).one()
    engine.dispose()
    assert (row.agent_id, row.name, row.dialect) == ("salon-bot", "Book", "midcall")
    assert row.source is not None
    assert json.loads(row.source) == source
    assert Tool.model_validate_json(row.definition) == make_tool("Book")


def test_delete_tool_says_whether_it_existed(store: ToolStore) -> None:
    store.put_tools("salon-bot", "midcall", [make_tool("Book"), make_tool("Cancel")])

    assert store.delete_tool("salon-bot", "Book") is True
    assert store.delete_tool("salon-bot", "Book") is False
    assert store.delete_tool("nobody", "Book") is False
    assert store.list_tools("salon-bot") == [owned(make_tool("Cancel"))]


def test_all_agents_and_all_tools_cover_every_agent(store: ToolStore) -> None:
    store.put_agent(AgentEntry(agent_id="idle", account_id="acme"))
    store.put_tools("salon-bot", "midcall", [make_tool("Book"), make_tool("Cancel")])
    store.put_tools("clinic", "midcall", [make_tool("Book")])

    agents = sorted(store.all_agents(), key=lambda a: a.agent_id)
    tools = sorted((agent_id, t.name) for agent_id, t in store.all_tools())

    assert [a.agent_id for a in agents] == ["clinic", "idle", "salon-bot"]
    assert tools == [("clinic", "Book"), ("salon-bot", "Book"), ("salon-bot", "Cancel")]


def test_putting_no_tools_still_registers_the_agent(store: ToolStore) -> None:
    store.put_tools("salon-bot", "midcall", [])

    assert store.get_agent("salon-bot") == AgentEntry(agent_id="salon-bot")
    assert store.list_tools("salon-bot") == []


def test_a_tool_is_owned_by_its_agents_account_as_it_is_now(store: ToolStore) -> None:
    stored = make_tool("Book").model_copy(update={"platform": True, "owner_account": "acme"})
    store.put_agent(AgentEntry(agent_id="salon-bot", account_id="acme"))
    store.put_tools("salon-bot", "midcall", [stored])

    store.put_agent(AgentEntry(agent_id="salon-bot", account_id="globex"))

    expected = owned(stored, "globex")
    assert store.get_tool("salon-bot", "Book") == expected
    assert store.list_tools("salon-bot") == [expected]
    assert store.all_tools() == [("salon-bot", expected)]
    assert expected.platform  # who registered it is kept with the tool
