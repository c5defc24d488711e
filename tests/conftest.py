"""Real infrastructure for the tests: nats-server processes and databases.

Each test gets its own nats-server (about 20 ms to start) with a temporary
JetStream directory, so durable consumers and de-duplication windows never
leak between tests. PostgreSQL tests use the server named by
``MIDCALL_TEST_POSTGRES_URL`` in a schema of their own; they skip when it is
unreachable, except under CI, where that is a failure.
"""

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import NoReturn

import httpx
import nats
import psycopg
import pytest
from nats.aio.client import Client
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from bench.postgres import fresh_schema
from services.billing.api import build_app as build_billing_app
from services.billing.store import UsageStore
from shared.fabric import jetstream
from shared.fabric.nats_server import NatsServer
from shared.observability.tracing import build_provider
from shared.process.storage import build_engine
from shared.settings import Settings
from tests.support.api import RecordingApi
from tests.support.fabric import Fabric, start_fabric, stop_fabric
from tests.support.keys import AS_ADMIN, Keys, admin_only

POSTGRES_URL = os.environ.get(
    "MIDCALL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)

# One tracer provider per process (OpenTelemetry allows setting it once); every
# in-process service reports into this exporter.
SPANS = InMemorySpanExporter()
trace.set_tracer_provider(build_provider("midcall-tests", processors=(SimpleSpanProcessor(SPANS),)))


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    SPANS.clear()
    yield SPANS
    SPANS.clear()


@pytest.fixture
async def nats_url(tmp_path: Path) -> AsyncIterator[str]:
    server = NatsServer(tmp_path / "nats")
    url = server.start()
    yield url
    await server.astop()


@pytest.fixture
async def streams_client(nats_url: str) -> AsyncIterator[Client]:
    """A connection to the test's nats-server, with every Midcall stream and bucket made."""
    connection = await nats.connect(nats_url)
    await jetstream.ensure(connection.jetstream())
    yield connection
    await connection.close()


def _postgres_schema() -> Iterator[str]:
    try:
        with fresh_schema(POSTGRES_URL) as url:
            yield url
    except psycopg.OperationalError as exc:
        _postgres_unreachable(exc)


def _postgres_unreachable(exc: Exception) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL is required in CI: {exc}")
    pytest.skip(f"PostgreSQL not reachable: {exc}")


@pytest.fixture
def postgres_url() -> str:
    """The PostgreSQL server's URL, for a test that makes its own schemas there."""
    try:
        psycopg.connect(POSTGRES_URL, connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        _postgres_unreachable(exc)
    return POSTGRES_URL


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database: SQLite in a temp file, or a PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'midcall.db'}"
    else:
        yield from _postgres_schema()


@pytest.fixture
def usage_store(database_url: str, tmp_path: Path) -> Iterator[UsageStore]:
    """Billing's store on each database, no NATS."""
    engine = build_engine(Settings(database_url=database_url, data_dir=tmp_path))
    yield UsageStore(engine)
    engine.dispose()


@pytest.fixture
async def billing_api(usage_store: UsageStore) -> AsyncIterator[httpx.AsyncClient]:
    """Billing's REST API over ``usage_store``, called with the admin key."""
    transport = httpx.ASGITransport(app=build_billing_app(usage_store, admin_only()))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://billing", headers=AS_ADMIN
    ) as client:
        yield client


@pytest.fixture
async def api() -> AsyncIterator[RecordingApi]:
    server = RecordingApi()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def fabric(nats_url: str, tmp_path: Path) -> AsyncIterator[Fabric]:
    """Every service started in-process on a fresh nats-server, storage on SQLite."""
    running = await start_fabric(nats_url, tmp_path, f"sqlite:///{tmp_path / 'fabric.db'}")
    yield running
    await stop_fabric(running)


@pytest.fixture
async def keys(fabric: Fabric) -> Keys:
    """Accounts ``acme`` and ``globex``, a key each; agent ``acme-bot`` is acme's."""
    acme, globex = await fabric.account("acme"), await fabric.account("globex")
    made = await fabric.registry.put("/v1/agents/acme-bot", json={"account_id": "acme"})
    assert made.status_code == 200, made.text
    return Keys(acme, globex)
