"""What an outside probe of the REST APIs sent, and the clear 4xx each now gets.

Documents nested past the depth limit (JSON bodies, tool schemas, Vocode's
string schemas, XML), times that overflow when converted to UTC, per-account
quotas, and how much each stored tool row holds: all against a real registry
(over NATS and SQL) or billing app, on SQLite and PostgreSQL.
"""

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from sqlmodel import Session, col, select

from services.billing.store import UsageStore
from services.registry import dialects
from services.registry import store as registry_store
from services.registry.dialects import vocode
from services.registry.main import RegistryService
from services.registry.store import QuotaExceeded, Quotas, ToolRow, ToolStore
from shared.contract.catalog import AgentEntry
from shared.contract.json_depth import MAX_DEPTH
from shared.contract.tools import DECLARED_BEFORE, Tool
from shared.process.storage import build_engine
from shared.settings import Settings
from tests import test_registry_api
from tests.factories import usage
from tests.support.keys import AS_ADMIN
from tests.test_registry_api import CANCEL, Catalog, assert_error, settings_for

# The registry API tests' fixtures: a RegistryService over NATS and SQL, its client, the catalog.
registry = test_registry_api.registry
client = test_registry_api.client
catalog = test_registry_api.catalog

TOO_DEEP = f"the document is nested deeper than the limit of {MAX_DEPTH} levels"
OUT_OF_RANGE = (
    "the date is out of range: {} in UTC is outside "
    "0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999Z"
)


def items_schema(depth: int) -> dict[str, Any]:
    """An object schema ``depth`` levels deep, one ``items`` per level: jsonschema's worst case."""
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(depth - 3):
        schema = {"type": "array", "items": schema}
    return {"type": "object", "properties": {"deep": schema}}


def depth_of(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(depth_of, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(depth_of, value), default=0)
    return 0


async def post(
    client: httpx.AsyncClient, dialect: str, document: Any, agent_id: str = "salon-bot"
) -> httpx.Response:
    content = (document if isinstance(document, str) else json.dumps(document)).encode()
    return await client.post(f"/v1/agents/{agent_id}/tools?dialect={dialect}", content=content)


def stored_rows(database_url: str, tmp_path: Path) -> list[ToolRow]:
    engine = build_engine(Settings(database_url=database_url, data_dir=tmp_path))
    with Session(engine) as session:
        rows = list(session.exec(select(ToolRow).order_by(col(ToolRow.name))).all())
    engine.dispose()
    return rows


# --- nesting depth ------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", ["midcall", "vocode", "bland", "aivoco", "callkaro"])
@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 1000, 300_000])
async def test_a_json_document_nested_too_deep_is_422_and_nothing_is_stored(
    client: httpx.AsyncClient, catalog: Catalog, dialect: str, depth: int
) -> None:
    # 1,000 deep made json.loads raise RecursionError (a 500); 300,000 is nearly the 1 MiB limit.
    response = await post(client, dialect, "[" * depth + "]" * depth)

    assert_error(response, 422, "document_too_deep", TOO_DEEP)
    assert response.json()["error"]["details"] == {"limit": MAX_DEPTH}
    assert await catalog.keys() == set()
    assert (await client.get("/v1/agents/salon-bot/tools")).status_code == 404


async def test_a_parameters_schema_nested_100_deep_is_422(client: httpx.AsyncClient) -> None:
    # jsonschema recursed out of stack on this one.
    document = {**CANCEL, "parameters": items_schema(100)}

    response = await post(client, "midcall", document)

    assert_error(response, 422, "document_too_deep", TOO_DEEP)


async def test_a_document_at_the_depth_limit_is_accepted_and_renders(
    client: httpx.AsyncClient,
) -> None:
    # {"tools": [tool]} puts the schema three levels down.
    document = {"tools": [{**CANCEL, "parameters": items_schema(MAX_DEPTH - 3)}]}
    assert depth_of(document) == MAX_DEPTH

    response = await post(client, "midcall", document)

    assert response.status_code == 201, response.text
    rendered = await client.get("/v1/agents/salon-bot/tools/Cancel?dialect=midcall")
    assert rendered.json()["parameters"] == items_schema(MAX_DEPTH - 3)


def test_a_tool_schema_nested_too_deep_is_refused_when_declared() -> None:
    # What the registry's document check cannot see: a tool declared any other way.
    document = {**CANCEL, "parameters": items_schema(MAX_DEPTH + 1)}

    with pytest.raises(ValidationError) as raised:
        Tool.model_validate(document)

    (error,) = raised.value.errors()
    assert error["loc"] == ("parameters",)
    assert error["msg"] == (
        f"Value error, the schema is nested deeper than the limit of {MAX_DEPTH} levels"
    )


def test_a_tool_declared_before_is_not_checked_again() -> None:
    # Work items carry their tool on every hop: the fast path skips declaration-time checks.
    document = {**CANCEL, "parameters": items_schema(MAX_DEPTH + 1)}

    tool = Tool.model_validate(document, context=DECLARED_BEFORE)

    assert tool.parameters == items_schema(MAX_DEPTH + 1)


def vocode_action(input_schema: Any, name: str = "Deep") -> dict[str, Any]:
    return {
        "name": name,
        "description": "Looks something up",
        "url": "https://api.example.com/lookup",
        "input_schema": input_schema,
    }


@pytest.mark.parametrize(
    "input_schema",
    [
        pytest.param(json.dumps(items_schema(MAX_DEPTH + 1)), id="just-past-the-limit"),
        pytest.param("[" * 5000 + "]" * 5000, id="past-the-json-decoder"),
    ],
)
async def test_a_vocode_string_schema_nested_too_deep_is_422(
    client: httpx.AsyncClient, input_schema: str
) -> None:
    response = await post(client, "vocode", [vocode_action(input_schema)])

    message = f"action 'Deep': input_schema is nested deeper than the limit of {MAX_DEPTH} levels"
    assert_error(response, 422, "invalid_tool", message)


async def test_a_vocode_string_schema_at_the_limit_is_accepted(client: httpx.AsyncClient) -> None:
    assert depth_of(items_schema(MAX_DEPTH)) == MAX_DEPTH
    response = await post(client, "vocode", [vocode_action(json.dumps(items_schema(MAX_DEPTH)))])

    assert response.status_code == 201, response.text
    assert response.json()["tools"][0]["parameters"] == items_schema(MAX_DEPTH)


def xml_nested(depth: int, inner: str = "") -> str:
    return "<S>" * depth + inner + "</S>" * depth


@pytest.mark.parametrize(
    "document",
    [
        pytest.param(xml_nested(MAX_DEPTH + 1), id="just-past-the-limit"),
        pytest.param(xml_nested(100_000), id="100000"),
        pytest.param(
            '<Tool name="Deep" url="https://x.example">'
            f'<Parameter name="From">{xml_nested(MAX_DEPTH)}</Parameter></Tool>',
            id="inside-a-tool",
        ),
    ],
)
async def test_an_xml_document_nested_too_deep_is_422(
    client: httpx.AsyncClient, document: str
) -> None:
    response = await post(client, "xml", document)

    assert_error(response, 422, "document_too_deep", TOO_DEEP)


async def test_an_xml_document_at_the_limit_is_accepted(client: httpx.AsyncClient) -> None:
    tool = '<Tool name="Shallow" url="https://x.example" />'

    response = await post(client, "xml", xml_nested(MAX_DEPTH - 1, tool))

    assert response.status_code == 201, response.text


# --- times that do not fit in UTC -----------------------------------------------------------


@pytest.mark.parametrize(
    ("parameter", "value"),
    [
        ("since", "0001-01-01T00:00:00+00:01"),
        ("until", "0001-01-01T00:00:00+00:01"),
        ("since", "9999-12-31T23:59:59-00:01"),
        ("until", "9999-12-31T23:59:59-00:01"),
    ],
)
async def test_a_usage_time_out_of_range_in_utc_is_422(
    billing_api: httpx.AsyncClient, parameter: str, value: str
) -> None:
    response = await billing_api.get("/v1/usage", params={"account_id": "acme", parameter: value})

    message = f"query.{parameter}: {OUT_OF_RANGE.format(value)}"
    assert_error(response, 422, "invalid_request", message)
    assert response.json()["error"]["details"][0]["type"] == "datetime_out_of_range"


async def test_the_widest_usage_range_that_fits_in_utc_is_answered(
    billing_api: httpx.AsyncClient, usage_store: UsageStore
) -> None:
    usage_store.record(usage("call-1"))
    params = {
        "account_id": "acme",
        "since": "0001-01-01T00:00:00-00:01",
        "until": "9999-12-31T23:59:59+00:01",
    }

    response = await billing_api.get("/v1/usage", params=params)

    assert (response.status_code, response.json()["calls"]) == (200, 1)


async def test_a_failed_calls_time_out_of_range_in_utc_is_422(client: httpx.AsyncClient) -> None:
    value = "0001-01-01T00:00:00+00:01"

    response = await client.get("/v1/failed", params={"since": value})

    assert_error(response, 422, "invalid_request", f"query.since: {OUT_OF_RANGE.format(value)}")


async def test_a_replay_time_out_of_range_in_utc_is_422(client: httpx.AsyncClient) -> None:
    value = "9999-12-31T23:59:59-00:01"

    response = await client.post("/v1/failed/replay", json={"until": value, "agent_id": "a"})

    assert_error(response, 422, "invalid_request", f"until: {OUT_OF_RANGE.format(value)}")


# --- each tool row keeps its own source -----------------------------------------------------

URL = "https://api.example.com/lookup"
XML_TOOL = (
    '<Tool name="lookup_{i}" url="' + URL + '"><Description>Looks up {i}</Description>'
    '<Parameter name="From" /></Tool>'
)


def entry(dialect: str, i: int) -> Any:
    """One tool of ``dialect`` as its document writes it, named by ``i``."""
    name, description = f"lookup_{i}", f"Looks up {i}"
    schema = {"type": "object", "properties": {"q": {"type": "string"}}}
    entries: dict[str, Any] = {
        "midcall": {"name": name, "description": description, "request": {"url": URL}},
        "vocode": {**vocode_action(json.dumps(schema), name), "description": description},
        "bland": {"name": name, "description": description, "url": URL, "input_schema": schema},
        "aivoco": {
            "name": name,
            "description": description,
            "api_url": URL,
            "method": "POST",
            "parameters": schema,
        },
        "callkaro": {
            "name": name,
            "description": description,
            "api_url": URL,
            "method": "POST",
            "parameters": [{"key": "q", "type": "string", "description": "what to find"}],
        },
        "xml": XML_TOOL.format(i=i),
    }
    return entries[dialect]


def document(dialect: str, count: int) -> Any:
    """``count`` tools in the dialect's document shape, amid fields that are no tool's."""
    tools = [entry(dialect, i) for i in range(count)]
    if dialect == "xml":
        return f"<Response><Say>Hello</Say><Gather>{'tail'.join(tools)}</Gather></Response>"
    if dialect == "bland":  # a call request: its other fields are ignored
        return {"task": "Book an appointment " * 100, "tools": tools}
    wrappers = {"midcall": "tools", "aivoco": "functions"}
    return {wrappers[dialect]: tools} if dialect in wrappers else tools


@pytest.mark.parametrize("dialect", dialects.DIALECTS)
async def test_each_tool_row_keeps_only_the_part_that_defined_it(
    client: httpx.AsyncClient, database_url: str, tmp_path: Path, dialect: str
) -> None:
    response = await post(client, dialect, document(dialect, 12))

    assert response.status_code == 201, response.text
    rows = stored_rows(database_url, tmp_path)
    assert {row.name for row in rows} == {f"lookup_{i}" for i in range(12)}
    for row in rows:
        assert row.source is not None
        source = json.loads(row.source)
        assert source == entry(dialect, int(row.name.removeprefix("lookup_")))
        # The source alone gives the tool back, and the dialect renders it.
        (tool,) = dialects.parse(dialect, source)
        kept = Tool.model_validate_json(row.definition)
        assert kept.public_dump() == tool.public_dump()
        assert kept.platform  # posted with the admin key
        rendered = await client.get(f"/v1/agents/salon-bot/tools/{row.name}?dialect={dialect}")
        expected = dialects.export(dialect, tool)
        assert rendered.status_code == 200
        assert (rendered.text if dialect == "xml" else rendered.json()) == expected


def test_a_dialect_that_cannot_split_keeps_each_tool_as_it_renders_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    unsplit = dialects.Dialect(vocode.parse, vocode.export)
    monkeypatch.setitem(dialects._DIALECTS, "vocode", unsplit)
    whole = document("vocode", 2)
    tools = dialects.parse("vocode", whole)

    assert dialects.sources("vocode", whole, tools) == [vocode.export(t) for t in tools]


def midcall_tools(count: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        {"name": f"tool_{i:04}", "description": f"Tool {i}", "request": {"url": f"{URL}/{i}"}}
        for i in range(start, start + count)
    ]


def database_bytes(database_url: str, tmp_path: Path) -> int:
    """The SQLite file and its write-ahead log, where the rows are until a checkpoint."""
    path = Path(database_url.removeprefix("sqlite:///"))
    return sum(p.stat().st_size for p in (path, path.with_name(path.name + "-wal")) if p.exists())


async def test_a_thousand_tools_store_about_what_was_posted(
    client: httpx.AsyncClient, database_url: str, tmp_path: Path
) -> None:
    # The probe's 70 KiB document of 1,000 tools grew SQLite by 74 MB: each row held it all.
    body = json.dumps({"tools": midcall_tools(1000)}).encode()

    response = await client.post("/v1/agents/salon-bot/tools", content=body)

    assert response.status_code == 201, response.text
    rows = stored_rows(database_url, tmp_path)
    assert len(rows) == 1000
    assert sum(len(row.source or "") for row in rows) < len(body)
    assert all(json.loads(row.source or "")["name"] == row.name for row in rows)
    if database_url.startswith("sqlite"):
        assert database_bytes(database_url, tmp_path) < 20 * len(body)
    rendered = await client.get("/v1/agents/salon-bot/tools/tool_0999?dialect=midcall")
    assert rendered.json() == Tool.model_validate(midcall_tools(1, 999)[0]).public_dump()


async def test_rows_that_kept_the_whole_document_still_render(
    nats_url: str, database_url: str, tmp_path: Path
) -> None:
    # Rows written before kept the whole posted document as their source.
    settings = settings_for(nats_url, database_url, tmp_path)
    engine = build_engine(settings)
    whole = document("vocode", 2)
    tools = dialects.parse("vocode", whole)
    ToolStore(engine).put_tools("salon-bot", "vocode", tools, [whole, whole])
    engine.dispose()
    service = RegistryService(settings)
    await service.start()
    try:
        base_url = f"http://127.0.0.1:{service.port}"
        async with httpx.AsyncClient(base_url=base_url, headers=AS_ADMIN) as http:
            rendered = await http.get("/v1/agents/salon-bot/tools/lookup_1?dialect=vocode")
    finally:
        await service.stop()

    assert (rendered.status_code, rendered.json()) == (200, dialects.export("vocode", tools[1]))


# --- per-account quotas ---------------------------------------------------------------------


async def test_the_tool_past_the_default_quota_is_409_and_not_stored(
    client: httpx.AsyncClient, catalog: Catalog
) -> None:
    await client.post("/v1/agents/salon-bot/tools", json=midcall_tools(1000))

    response = await client.post("/v1/agents/salon-bot/tools", json=midcall_tools(1, 1000))

    message = "account 'default' would have 1001 tools; the limit is 1000 per account"
    assert_error(response, 409, "quota_exceeded", message)
    details = {"quota": "tools_per_account", "limit": 1000, "would_have": 1001}
    assert response.json()["error"]["details"] == details
    assert (await client.get("/v1/agents/salon-bot/tools/tool_1000")).status_code == 404
    assert await catalog.entry("tools.salon-bot.tool_1000") is None
    # Replacing tools adds none: a full account can still change what it has.
    replaced = await client.post("/v1/agents/salon-bot/tools", json=midcall_tools(1000))
    assert replaced.status_code == 201


@pytest.fixture
async def small_quotas(
    nats_url: str, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[httpx.AsyncClient]:
    """A registry whose accounts may have 3 tools and 2 agents."""
    monkeypatch.setattr(registry_store, "MAX_TOOLS_PER_ACCOUNT", 3)
    monkeypatch.setattr(registry_store, "MAX_AGENTS_PER_ACCOUNT", 2)
    service = RegistryService(settings_for(nats_url, database_url, tmp_path))
    await service.start()
    base_url = f"http://127.0.0.1:{service.port}"
    async with httpx.AsyncClient(base_url=base_url, timeout=10, headers=AS_ADMIN) as http:
        yield http
    await service.stop()


async def test_the_tools_of_every_agent_of_an_account_count_together(
    small_quotas: httpx.AsyncClient,
) -> None:
    for agent_id in ("a", "b"):
        await small_quotas.put(f"/v1/agents/{agent_id}", json={"account_id": "acme"})
    await small_quotas.post("/v1/agents/a/tools", json=midcall_tools(2))

    response = await small_quotas.post("/v1/agents/b/tools", json=midcall_tools(2, 2))

    message = "account 'acme' would have 4 tools; the limit is 3 per account"
    assert_error(response, 409, "quota_exceeded", message)
    assert (await small_quotas.get("/v1/agents/b/tools")).json()["tools"] == []
    assert (await small_quotas.post("/v1/agents/b/tools", json=midcall_tools(1, 2))).is_success


async def test_the_agent_past_the_quota_is_409_and_not_stored(
    small_quotas: httpx.AsyncClient,
) -> None:
    for agent_id in ("a", "b"):
        await small_quotas.put(f"/v1/agents/{agent_id}", json={"account_id": "acme"})

    response = await small_quotas.put("/v1/agents/c", json={"account_id": "acme"})

    message = "account 'acme' would have 3 agents; the limit is 2 per account"
    assert_error(response, 409, "quota_exceeded", message)
    assert (await small_quotas.get("/v1/agents/c")).status_code == 404
    renamed = await small_quotas.put("/v1/agents/a", json={"account_id": "acme", "name": "A"})
    assert renamed.status_code == 200


async def test_a_new_agent_past_the_default_accounts_quota_is_409(
    small_quotas: httpx.AsyncClient,
) -> None:
    for agent_id in ("a", "b"):
        await small_quotas.post(f"/v1/agents/{agent_id}/tools", json=CANCEL)

    response = await small_quotas.post("/v1/agents/c/tools", json=CANCEL)

    message = "account 'default' would have 3 agents; the limit is 2 per account"
    assert_error(response, 409, "quota_exceeded", message)
    assert (await small_quotas.get("/v1/agents/c")).status_code == 404


async def test_an_agent_moving_to_an_account_brings_its_tools_into_its_quota(
    small_quotas: httpx.AsyncClient,
) -> None:
    await small_quotas.put("/v1/agents/a", json={"account_id": "acme"})
    await small_quotas.post("/v1/agents/a/tools", json=midcall_tools(2))
    await small_quotas.post("/v1/agents/b/tools", json=midcall_tools(2, 2))

    response = await small_quotas.put("/v1/agents/b", json={"account_id": "acme"})

    message = "account 'acme' would have 4 tools; the limit is 3 per account"
    assert_error(response, 409, "quota_exceeded", message)
    assert (await small_quotas.get("/v1/agents/b")).json()["account_id"] == "default"


@pytest.fixture
def tool_store(database_url: str, tmp_path: Path) -> Iterator[ToolStore]:
    engine = build_engine(Settings(database_url=database_url, data_dir=tmp_path))
    yield ToolStore(engine, Quotas(tools=2, agents=5))
    engine.dispose()


def test_an_account_over_a_quota_it_predates_may_still_replace_but_not_grow(
    tool_store: ToolStore, database_url: str, tmp_path: Path
) -> None:
    tools = [Tool.model_validate(t) for t in midcall_tools(3)]
    engine = build_engine(Settings(database_url=database_url, data_dir=tmp_path))
    ToolStore(engine).put_tools("salon-bot", "midcall", tools)  # before the quota was lower
    engine.dispose()

    tool_store.put_tools("salon-bot", "midcall", tools[:1])
    with pytest.raises(QuotaExceeded, match="would have 4 tools; the limit is 2"):
        tool_store.put_tools("salon-bot", "midcall", [Tool.model_validate(CANCEL)])

    assert [t.name for t in tool_store.list_tools("salon-bot")] == [t.name for t in tools]
    assert tool_store.get_agent("salon-bot") == AgentEntry(agent_id="salon-bot")
