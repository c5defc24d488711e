"""Foreign tool documents over the registry's REST API, served by a real RegistryService.

Given a running registry, when a client posts a platform's own document with
``?dialect=D``, then it gets the canonical tools back and can read each one in
its dialect again; a tool a dialect cannot express is a 409 saying why.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.code_executor.main import CodeExecutorService
from services.registry import dialects
from services.registry.main import RegistryService
from services.registry.tool_secrets import extract_signing_secrets
from shared.settings import Settings
from tests.dialect_support import EXAMPLES, example
from tests.support.keys import ADMIN_KEY, AS_ADMIN

# (dialect, examples/ file, a tool it defines)
EXAMPLE_TOOLS = [
    ("vocode", "vocode_meeting_booking.json", "Meeting_Booking_Assistant"),
    ("bland", "bland_book_appointment.json", "BookAppointment"),
    ("aivoco", "aivoco_functions.json", "book_appointment"),
    ("xml", "xml_contact_lookup.xml", "contactLookUp"),
    ("callkaro", "callkaro_product_availability.json", "check_product_availability"),
]
CONTENT_TYPES = {"xml": "application/xml"}


@asynccontextmanager
async def registry(
    nats_url: str, database_url: str, data_dir: Path, **settings: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """A running RegistryService (``settings``: more of its settings), and a client as admin;
    with a code-executor, which the registry asks whether python tools can run."""
    config = Settings(
        nats_url=nats_url,
        database_url=database_url,
        registry_port=0,
        data_dir=data_dir,
        admin_key=ADMIN_KEY,
        **settings,
    )
    service, code_executor = RegistryService(config), CodeExecutorService(config)
    await service.start()
    await code_executor.start()
    base_url = f"http://127.0.0.1:{service.port}"
    async with httpx.AsyncClient(base_url=base_url, timeout=10, headers=AS_ADMIN) as http:
        yield http
    await code_executor.stop()
    await service.stop()


@pytest.fixture
async def client(
    nats_url: str, database_url: str, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    async with registry(nats_url, database_url, tmp_path) as http:
        yield http


async def post(client: httpx.AsyncClient, dialect: str, file: str) -> httpx.Response:
    return await client.post(
        f"/v1/agents/salon-bot/tools?dialect={dialect}",
        content=(EXAMPLES / file).read_bytes(),
        headers={"Content-Type": CONTENT_TYPES.get(dialect, "application/json")},
    )


def canonical(dialect: str, file: str) -> list[dict[str, Any]]:
    """The tools as the registry shows them: a signing secret becomes an account secret's name."""
    parsed = dialects.parse(dialect, example(file))
    return [t.public_dump() for t in extract_signing_secrets("salon-bot", parsed).tools]


def assert_error(response: httpx.Response, status: int, code: str, message: str) -> None:
    assert (response.status_code, response.json()["error"]["code"]) == (status, code)
    assert response.json()["error"]["message"] == message


@pytest.mark.parametrize(("dialect", "file", "name"), EXAMPLE_TOOLS)
async def test_posting_a_platform_document_stores_its_canonical_tools(
    client: httpx.AsyncClient, dialect: str, file: str, name: str
) -> None:
    response = await post(client, dialect, file)

    expected = canonical(dialect, file)
    assert (response.status_code, response.json()) == (
        201,
        {"agent_id": "salon-bot", "tools": expected},
    )
    stored = await client.get(f"/v1/agents/salon-bot/tools/{name}")
    assert stored.json() == next(t for t in expected if t["name"] == name)


@pytest.mark.parametrize(("dialect", "file", "name"), EXAMPLE_TOOLS)
async def test_a_tool_reads_back_in_its_own_dialect(
    client: httpx.AsyncClient, dialect: str, file: str, name: str
) -> None:
    await post(client, dialect, file)

    response = await client.get(f"/v1/agents/salon-bot/tools/{name}?dialect={dialect}")

    (tool,) = [t for t in dialects.parse(dialect, example(file)) if t.name == name]
    assert response.status_code == 200
    if dialect == "xml":
        assert response.headers["content-type"] == "application/xml"
        assert response.text == dialects.export("xml", tool)
    else:
        assert response.json() == dialects.export(dialect, tool)


async def test_the_bland_tool_reads_back_as_bland_wrote_it(client: httpx.AsyncClient) -> None:
    await post(client, "bland", "bland_book_appointment.json")

    response = await client.get("/v1/agents/salon-bot/tools/BookAppointment?dialect=bland")

    assert response.json() == example("bland_book_appointment.json")


async def test_the_default_and_midcall_renderings_are_the_canonical_tool(
    client: httpx.AsyncClient,
) -> None:
    await post(client, "xml", "xml_contact_lookup.xml")

    plain = await client.get("/v1/agents/salon-bot/tools/contactLookUp")
    midcall = await client.get("/v1/agents/salon-bot/tools/contactLookUp?dialect=midcall")

    assert plain.json() == midcall.json() == canonical("xml", "xml_contact_lookup.xml")[0]


async def test_a_tool_another_dialect_cannot_express_is_409(client: httpx.AsyncClient) -> None:
    await post(client, "bland", "bland_book_appointment.json")

    response = await client.get("/v1/agents/salon-bot/tools/BookAppointment?dialect=xml")

    assert_error(
        response,
        409,
        "not_expressible",
        "tool 'BookAppointment' cannot be expressed in xml: xml has no way to say "
        "parameters.properties.speech, parameters.properties.date, "
        "parameters.properties.time, parameters.properties.service, parameters.examples, "
        "request.headers.Authorization, request.body, speech.from_argument, "
        "response.variables.succesfully_booked_slot, response.variables.stylist_name, "
        "errors.end_conversation_on",
    )


async def test_an_unknown_export_dialect_is_400(client: httpx.AsyncClient) -> None:
    await post(client, "aivoco", "aivoco_functions.json")

    response = await client.get("/v1/agents/salon-bot/tools/get_weather?dialect=retell")

    assert_error(
        response,
        400,
        "unknown_dialect",
        "unknown dialect 'retell'; use one of: midcall, vocode, bland, aivoco, xml, callkaro",
    )


async def test_an_invalid_document_is_422_and_nothing_is_stored(
    client: httpx.AsyncClient,
) -> None:
    document = {"functions": [{"name": "get weather", "method": "FETCH"}]}

    response = await client.post("/v1/agents/salon-bot/tools?dialect=aivoco", json=document)

    problems = [
        "function 'get weather': missing required field 'description'",
        "function 'get weather': missing required field 'api_url'",
        "function 'get weather': missing required field 'parameters'",
        "function 'get weather': name must contain only letters, digits and underscores",
        "function 'get weather': method must be one of GET, POST, PUT, DELETE, PATCH",
    ]
    assert_error(response, 422, "invalid_tool", "; ".join(problems))
    assert response.json()["error"]["details"] == problems
    assert (await client.get("/v1/agents/salon-bot/tools")).status_code == 404


async def test_malformed_xml_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/agents/salon-bot/tools?dialect=xml", content=b"<Response><Tool></Response>"
    )

    assert_error(
        response,
        422,
        "invalid_tool",
        "the document is not well-formed XML: mismatched tag: line 1, column 18",
    )


async def test_xml_that_is_not_utf8_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/agents/salon-bot/tools?dialect=xml", content='<Tool name="é"/>'.encode("latin-1")
    )

    assert_error(
        response,
        400,
        "invalid_text",
        "the request body is not UTF-8 text: 'utf-8' codec can't decode byte 0xe9 in "
        "position 12: invalid continuation byte",
    )


async def test_a_json_dialect_still_needs_json(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/agents/salon-bot/tools?dialect=vocode", content=b"<Tool/>")

    assert_error(
        response,
        400,
        "invalid_json",
        "the request body is not valid JSON: Expecting value: line 1 column 1 (char 0)",
    )
