"""The registry's REST API, served by a real RegistryService over real NATS and SQL.

Given a running registry, when a client calls it over loopback, then it gets
the exact status and body the contract names, and every accepted change is in
the catalog bucket by the time the response arrives (SQL first, then the
catalog, then the response), so the catalog is read directly, with no wait.
"""

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from services.registry.api import build_app
from services.registry.bucket_mirror import BucketMirror
from services.registry.catalog_writer import CatalogWriter
from services.registry.main import RegistryService
from services.registry.secret_keeper import SecretKeeper
from services.registry.secret_store import SecretStore
from services.registry.store import ToolStore
from shared.contract.subjects import CATALOG_BUCKET, SECRETS_BUCKET
from shared.contract.tools import Tool
from shared.fabric import jetstream
from shared.process.storage import build_engine
from shared.security.secret_box import SecretBox
from shared.settings import Settings
from tests.support.keys import ADMIN_KEY, AS_ADMIN, admin_only

BOOK: dict[str, Any] = {
    "name": "BookAppointment",
    "description": "Books an appointment for the customer",
    "parameters": {
        "type": "object",
        "properties": {"date": {"type": "string"}, "From": {"type": "string"}},
        "required": ["date", "From"],
        "additionalProperties": False,
    },
    "context_parameters": [{"name": "From", "required": True}],
    "request": {"url": "https://api.example.com/book", "body": {"date": "{{input.date}}"}},
}
CANCEL: dict[str, Any] = {"name": "Cancel", "request": {"url": "https://api.example.com/cancel"}}
ID_RULE = r"String should match pattern '^[A-Za-z0-9_\-=]{1,128}$'"


def canonical(document: dict[str, Any]) -> dict[str, Any]:
    return Tool.model_validate(document).public_dump()


def in_catalog(
    document: dict[str, Any], platform: bool = True, owner: str = "default"
) -> dict[str, Any]:
    """The tool as dispatchers get it: with its kind, whose it is and who registered it."""
    shown = canonical(document)
    return {
        **shown,
        "request": {**shown["request"], "on_cancel": None, "callback_timeout_s": None},
        "kind": "http",
        "python": None,
        "platform": platform,
        "owner_account": owner,
    }


def with_fields(document: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {**json.loads(json.dumps(document)), **fields}


def settings_for(nats_url: str, database_url: str, data_dir: Path) -> Settings:
    return Settings(
        nats_url=nats_url,
        database_url=database_url,
        registry_port=0,
        data_dir=data_dir,
        admin_key=ADMIN_KEY,
    )


@pytest.fixture
async def registry(
    nats_url: str, database_url: str, tmp_path: Path
) -> AsyncIterator[RegistryService]:
    service = RegistryService(settings_for(nats_url, database_url, tmp_path))
    await service.start()
    yield service
    await service.stop()


@pytest.fixture
async def client(registry: RegistryService) -> AsyncIterator[httpx.AsyncClient]:
    base_url = f"http://127.0.0.1:{registry.port}"
    async with httpx.AsyncClient(base_url=base_url, timeout=10, headers=AS_ADMIN) as http:
        yield http


class Catalog:
    """The catalog bucket read as a dispatcher would, with nats-py directly."""

    def __init__(self, js: JetStreamContext, kv: KeyValue) -> None:
        self.js = js
        self.kv = kv

    async def entry(self, key: str) -> Any:
        """The decoded value under ``key``, or None when it is absent or deleted."""
        try:
            entry = await self.kv.get(key)
        except KeyNotFoundError:
            return None
        assert entry.value is not None
        return json.loads(entry.value)

    async def keys(self) -> set[str]:
        # Read from the bucket's stream: KeyValue.keys() can report no keys under load.
        prefix = f"$KV.{CATALOG_BUCKET}."
        info = await self.js.stream_info(f"KV_{CATALOG_BUCKET}", subjects_filter=f"{prefix}>")
        keys = [subject[len(prefix) :] for subject in info.state.subjects or {}]
        return {key for key in keys if await self.entry(key) is not None}


@pytest.fixture
async def catalog(nats_url: str) -> AsyncIterator[Catalog]:
    connection = await nats.connect(nats_url)
    js = connection.jetstream()
    await jetstream.ensure(js)
    yield Catalog(js, await js.key_value(CATALOG_BUCKET))
    await connection.close()


def assert_error(response: httpx.Response, status: int, code: str, message: str) -> None:
    assert (response.status_code, response.json()["error"]["code"]) == (status, code)
    assert response.json()["error"]["message"] == message


# --- tools: create, replace, read, delete --------------------------------------------------


async def test_posting_a_tool_stores_and_distributes_it(
    client: httpx.AsyncClient, catalog: Catalog
) -> None:
    response = await client.post("/v1/agents/salon-bot/tools", json=BOOK)

    assert response.status_code == 201
    assert response.json() == {"agent_id": "salon-bot", "tools": [canonical(BOOK)]}
    assert await catalog.entry("tools.salon-bot.BookAppointment") == in_catalog(BOOK)
    assert await catalog.entry("agents.salon-bot") == {
        "agent_id": "salon-bot",
        "account_id": "default",
        "name": None,
    }


@pytest.mark.parametrize("shape", ["list", "wrapped"])
async def test_a_document_may_hold_several_tools(client: httpx.AsyncClient, shape: str) -> None:
    document: Any = [BOOK, CANCEL] if shape == "list" else {"tools": [BOOK, CANCEL]}

    response = await client.post("/v1/agents/salon-bot/tools?dialect=midcall", json=document)

    assert response.status_code == 201
    assert response.json()["tools"] == [canonical(BOOK), canonical(CANCEL)]


async def test_posting_a_tool_again_replaces_it(
    client: httpx.AsyncClient, catalog: Catalog
) -> None:
    await client.post("/v1/agents/salon-bot/tools", json=[BOOK, CANCEL])
    changed = with_fields(BOOK, description="Books a slot")

    response = await client.post("/v1/agents/salon-bot/tools", json=changed)

    assert response.status_code == 201
    listed = await client.get("/v1/agents/salon-bot/tools")
    assert listed.json() == {
        "agent_id": "salon-bot",
        "tools": [canonical(changed), canonical(CANCEL)],
    }
    assert await catalog.entry("tools.salon-bot.BookAppointment") == in_catalog(changed)


async def test_the_tool_list_is_304_while_unchanged_and_200_once_it_changes(
    client: httpx.AsyncClient,
) -> None:
    await client.post("/v1/agents/salon-bot/tools", json=BOOK)
    first = await client.get("/v1/agents/salon-bot/tools")
    etag = first.headers["ETag"]

    unchanged = await client.get("/v1/agents/salon-bot/tools", headers={"If-None-Match": etag})
    among = await client.get(
        "/v1/agents/salon-bot/tools", headers={"If-None-Match": f'"other", {etag}'}
    )
    await client.post("/v1/agents/salon-bot/tools", json=CANCEL)
    changed = await client.get("/v1/agents/salon-bot/tools", headers={"If-None-Match": etag})

    assert first.json() == {"agent_id": "salon-bot", "tools": [canonical(BOOK)]}
    assert (unchanged.status_code, unchanged.content, unchanged.headers["ETag"]) == (304, b"", etag)
    assert among.status_code == 304
    assert changed.status_code == 200
    assert changed.json()["tools"] == [canonical(BOOK), canonical(CANCEL)]
    assert changed.headers["ETag"] not in (etag, "")


async def test_get_one_tool_returns_its_canonical_form(client: httpx.AsyncClient) -> None:
    await client.post("/v1/agents/salon-bot/tools", json=BOOK)

    response = await client.get("/v1/agents/salon-bot/tools/BookAppointment")

    assert (response.status_code, response.json()) == (200, canonical(BOOK))


async def test_deleting_a_tool_removes_it_everywhere(
    client: httpx.AsyncClient, catalog: Catalog
) -> None:
    await client.post("/v1/agents/salon-bot/tools", json=[BOOK, CANCEL])

    response = await client.delete("/v1/agents/salon-bot/tools/BookAppointment")

    assert (response.status_code, response.content) == (204, b"")
    assert await catalog.entry("tools.salon-bot.BookAppointment") is None
    assert await catalog.keys() == {"agents.salon-bot", "tools.salon-bot.Cancel"}
    missing = await client.get("/v1/agents/salon-bot/tools/BookAppointment")
    assert_error(missing, 404, "unknown_tool", "agent 'salon-bot' has no tool 'BookAppointment'")
    again = await client.delete("/v1/agents/salon-bot/tools/BookAppointment")
    assert_error(again, 404, "unknown_tool", "agent 'salon-bot' has no tool 'BookAppointment'")


async def test_an_agent_whose_tools_were_all_deleted_lists_none(client: httpx.AsyncClient) -> None:
    await client.post("/v1/agents/salon-bot/tools", json=CANCEL)
    await client.delete("/v1/agents/salon-bot/tools/Cancel")

    response = await client.get("/v1/agents/salon-bot/tools")

    assert (response.status_code, response.json()) == (200, {"agent_id": "salon-bot", "tools": []})


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/agents/nobody/tools"),
        ("GET", "/v1/agents/nobody/tools/Cancel"),
        ("DELETE", "/v1/agents/nobody/tools/Cancel"),
        ("GET", "/v1/agents/nobody/manifest?format=openai"),
        ("GET", "/v1/agents/nobody"),
    ],
)
async def test_an_unknown_agent_is_404(client: httpx.AsyncClient, method: str, path: str) -> None:
    response = await client.request(method, path)

    assert_error(response, 404, "unknown_agent", "agent 'nobody' is not registered")


# --- what a bad tool document gets back ---------------------------------------------------


@pytest.mark.parametrize(
    ("document", "message"),
    [
        pytest.param(
            with_fields(BOOK, name="Book Appointment"),
            "tools[0].name: String should match pattern '^[A-Za-z0-9_]{1,64}$'",
            id="name",
        ),
        pytest.param(
            with_fields(CANCEL, request={"url": "https://x.example", "method": "FETCH"}),
            "tools[0].request.method: Input should be 'GET', 'POST', 'PUT', 'PATCH' or 'DELETE'",
            id="method",
        ),
        pytest.param(
            [CANCEL, with_fields(BOOK, request={"url": "ftp://x.example/book"})],
            "tools[1].request.url: Value error, must be an absolute http:// or https:// URL",
            id="url",
        ),
        pytest.param(
            with_fields(
                BOOK, parameters={"type": "object", "properties": {"date": {"type": "strin"}}}
            ),
            "tools[0].parameters: Value error, not a valid JSON Schema at "
            "properties/date/type: 'strin' is not valid under any of the given schemas",
            id="json-schema",
        ),
        pytest.param(
            with_fields(BOOK, parameters={"type": "array"}),
            'tools[0].parameters: Value error, must be a JSON Schema with "type": "object" '
            "at the top level",
            id="object-schema",
        ),
        pytest.param(
            with_fields(
                CANCEL, request={"url": "https://x.example", "headers": {"X-Home": "{{env.HOME}}"}}
            ),
            "tools[0].request: Value error, headers: unknown template root 'env' "
            "(use one of: input, context, secrets, call, conversation)",
            id="template",
        ),
        pytest.param(
            with_fields(CANCEL, response={"variables": {"stylist": "$.["}}),
            "tools[0].response: Value error, variables.stylist: '$.[' is not a "
            "JSONPath (Parse error near the end of string!)",
            id="jsonpath",
        ),
        pytest.param(
            with_fields(CANCEL, colour="red"),
            "tools[0].colour: Extra inputs are not permitted",
            id="extra-field",
        ),
        pytest.param(
            [CANCEL, CANCEL],
            "tools[1].name: 'Cancel' is already defined by tools[0] in this document",
            id="duplicate",
        ),
        pytest.param({"tools": []}, "the document defines no tools", id="empty"),
        pytest.param(
            "Cancel",
            "tools[0]: Input should be a valid dictionary or instance of Tool",
            id="not-an-object",
        ),
    ],
)
async def test_an_invalid_tool_is_422_naming_the_tool_and_field(
    client: httpx.AsyncClient, catalog: Catalog, document: Any, message: str
) -> None:
    response = await client.post("/v1/agents/salon-bot/tools", json=document)

    assert_error(response, 422, "invalid_tool", message)
    assert await catalog.keys() == set()
    assert (await client.get("/v1/agents/salon-bot/tools")).status_code == 404


async def test_validation_details_carry_each_error_location(client: httpx.AsyncClient) -> None:
    document = with_fields(CANCEL, name="bad name", colour="red")

    response = await client.post("/v1/agents/salon-bot/tools", json=document)

    assert response.json()["error"]["details"] == [
        {
            "loc": ["tools[0]", "name"],
            "type": "string_pattern_mismatch",
            "msg": "String should match pattern '^[A-Za-z0-9_]{1,64}$'",
        },
        {
            "loc": ["tools[0]", "colour"],
            "type": "extra_forbidden",
            "msg": "Extra inputs are not permitted",
        },
    ]


async def test_malformed_json_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/agents/salon-bot/tools", content=b'{"name": ')

    assert_error(
        response,
        400,
        "invalid_json",
        "the request body is not valid JSON: Expecting value: line 1 column 10 (char 9)",
    )


async def test_an_oversized_document_is_413(client: httpx.AsyncClient) -> None:
    document = with_fields(CANCEL, description="x" * 1024 * 1024)

    response = await client.post("/v1/agents/salon-bot/tools", json=document)

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "document_too_large"


async def test_an_unknown_dialect_is_400_listing_the_valid_ones(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/agents/salon-bot/tools?dialect=retell", json=CANCEL)

    assert_error(
        response,
        400,
        "unknown_dialect",
        "unknown dialect 'retell'; use one of: midcall, vocode, bland, aivoco, xml, callkaro",
    )


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/agents/salon.bot/tools"),
        ("GET", "/v1/agents/salon.bot/tools"),
        ("GET", "/v1/agents/salon.bot/tools/Cancel"),
        ("DELETE", "/v1/agents/salon.bot/tools/Cancel"),
        ("GET", "/v1/agents/salon.bot/manifest?format=openai"),
        ("GET", "/v1/agents/salon.bot"),
    ],
)
async def test_an_agent_id_that_cannot_be_a_subject_token_is_422(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    response = await client.request(method, path, json=CANCEL if method == "POST" else None)

    assert_error(response, 422, "invalid_request", f"path.agent_id: {ID_RULE}")


async def test_a_tool_name_that_no_tool_can_have_is_422(client: httpx.AsyncClient) -> None:
    response = await client.delete("/v1/agents/salon-bot/tools/Book.Appointment")

    assert_error(
        response,
        422,
        "invalid_request",
        "path.name: String should match pattern '^[A-Za-z0-9_]{1,64}$'",
    )


# --- agents -------------------------------------------------------------------------------


async def test_putting_an_agent_sets_its_account(
    client: httpx.AsyncClient, catalog: Catalog
) -> None:
    response = await client.put(
        "/v1/agents/salon-bot", json={"account_id": "acme", "name": "Salon"}
    )

    expected = {"agent_id": "salon-bot", "account_id": "acme", "name": "Salon"}
    assert (response.status_code, response.json()) == (200, expected)
    assert (await client.get("/v1/agents/salon-bot")).json() == expected
    assert await catalog.entry("agents.salon-bot") == expected


async def test_an_agent_used_before_it_is_created_belongs_to_default_until_put(
    client: httpx.AsyncClient, catalog: Catalog
) -> None:
    await client.post("/v1/agents/salon-bot/tools", json=CANCEL)
    assert (await client.get("/v1/agents/salon-bot")).json()["account_id"] == "default"

    await client.put("/v1/agents/salon-bot", json={"account_id": "acme"})
    await client.post("/v1/agents/salon-bot/tools", json=BOOK)

    expected = {"agent_id": "salon-bot", "account_id": "acme", "name": None}
    assert (await client.get("/v1/agents/salon-bot")).json() == expected
    assert await catalog.entry("agents.salon-bot") == expected


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"account_id": "acme corp"}, f"account_id: {ID_RULE}"),
        ({"name": "Salon"}, "account_id: Field required"),
        ({"account_id": "acme", "owner": "x"}, "owner: Extra inputs are not permitted"),
    ],
)
async def test_a_bad_agent_body_is_422(
    client: httpx.AsyncClient, body: dict[str, Any], message: str
) -> None:
    response = await client.put("/v1/agents/salon-bot", json=body)

    assert_error(response, 422, "invalid_request", message)


# --- manifest -----------------------------------------------------------------------------

LLM_PARAMETERS = {
    "type": "object",
    "properties": {"date": {"type": "string"}},
    "required": ["date"],
    "additionalProperties": False,
}
DESCRIPTION = BOOK["description"]


@pytest.mark.parametrize(
    ("fmt", "tools"),
    [
        (
            "openai",
            [
                {
                    "type": "function",
                    "function": {
                        "name": "BookAppointment",
                        "description": DESCRIPTION,
                        "parameters": LLM_PARAMETERS,
                    },
                }
            ],
        ),
        (
            "anthropic",
            [
                {
                    "name": "BookAppointment",
                    "description": DESCRIPTION,
                    "input_schema": LLM_PARAMETERS,
                }
            ],
        ),
        (
            "gemini",
            [
                {
                    "functionDeclarations": [
                        {
                            "name": "BookAppointment",
                            "description": DESCRIPTION,
                            "parameters": {
                                "type": "object",
                                "properties": {"date": {"type": "string"}},
                                "required": ["date"],
                            },
                        }
                    ]
                }
            ],
        ),
    ],
)
async def test_the_manifest_leaves_context_parameters_to_the_call(
    client: httpx.AsyncClient, fmt: str, tools: list[dict[str, Any]]
) -> None:
    await client.post("/v1/agents/salon-bot/tools", json=BOOK)

    response = await client.get(f"/v1/agents/salon-bot/manifest?format={fmt}")

    assert (response.status_code, response.json()) == (200, {"format": fmt, "tools": tools})


async def test_an_unknown_manifest_format_is_422(client: httpx.AsyncClient) -> None:
    await client.post("/v1/agents/salon-bot/tools", json=BOOK)

    response = await client.get("/v1/agents/salon-bot/manifest?format=llama")

    assert_error(
        response,
        422,
        "invalid_request",
        "query.format: Input should be 'openai', 'anthropic' or 'gemini'",
    )


async def test_healthz(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")

    assert (response.status_code, response.json()) == (200, {"status": "ok"})


# --- the catalog follows SQL --------------------------------------------------------------


async def test_start_up_makes_the_catalog_match_sql(
    nats_url: str, database_url: str, tmp_path: Path, catalog: Catalog
) -> None:
    settings = settings_for(nats_url, database_url, tmp_path)
    engine = build_engine(settings)
    ToolStore(engine).put_tools("salon-bot", "midcall", [Tool.model_validate(BOOK)])
    engine.dispose()
    await catalog.kv.put("tools.ghost.Old", b"{}")
    await catalog.kv.put("agents.ghost", b"{}")
    await catalog.kv.delete("tools.salon-bot.Retired")

    service = RegistryService(settings)
    await service.start()
    try:
        assert await catalog.keys() == {
            "agents.salon-bot",
            "tools.salon-bot.BookAppointment",
        }
        assert await catalog.entry("tools.salon-bot.BookAppointment") == in_catalog(
            BOOK, platform=False
        )
    finally:
        await service.stop()


class FlakyKeyValue:
    """A catalog bucket whose next write fails, as when NATS is briefly unreachable."""

    def __init__(self) -> None:
        self.values: dict[str, bytes] = {}
        self.fail_next = True

    async def put(self, key: str, value: bytes) -> int:
        if self.fail_next:
            self.fail_next = False
            raise nats.errors.TimeoutError
        self.values[key] = value
        return len(self.values)


async def test_a_failed_catalog_write_is_503_and_a_retry_completes_it(tmp_path: Path) -> None:
    engine = build_engine(Settings(data_dir=tmp_path))
    kv = FlakyKeyValue()
    mirror = BucketMirror(None, CATALOG_BUCKET, kv)  # type: ignore[arg-type]
    secrets_kv = FlakyKeyValue()
    secrets_kv.fail_next = False
    secrets = SecretKeeper(
        SecretStore(engine),
        SecretBox(bytes(32)),
        BucketMirror(None, SECRETS_BUCKET, secrets_kv),  # type: ignore[arg-type]
    )
    app = build_app(ToolStore(engine), CatalogWriter(mirror), admin_only(), secrets)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://registry", headers=AS_ADMIN
    ) as http:
        failed = await http.post("/v1/agents/salon-bot/tools", json=CANCEL)
        retried = await http.post("/v1/agents/salon-bot/tools", json=CANCEL)
    engine.dispose()

    assert failed.status_code == 503
    assert failed.json()["error"]["code"] == "catalog_unavailable"
    assert retried.status_code == 201
    assert set(kv.values) == {"agents.salon-bot", "tools.salon-bot.Cancel"}
