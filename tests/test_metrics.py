"""Prometheus metrics as a scraper reads them from /metrics."""

import asyncio
import socket
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.http_executor.main import HttpExecutorService
from shared.fabric.nats_server import NatsServer, free_port
from shared.observability import metrics
from shared.settings import Settings
from tests.support.api import RecordingApi
from tests.support.fabric import Fabric
from tests.test_spine import AGENT, booking_tool, new_call, place

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(fabric: Fabric) -> Samples:
    response = await fabric.registry.get("/metrics/")
    assert response.status_code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def grew(before: Samples, after: Samples, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


async def test_calls_and_their_latencies_are_counted(fabric: Fabric, api: RecordingApi) -> None:
    api.reply("POST", "/book", json={"success": True, "stylist_name": "Ana"})
    await fabric.register(AGENT, booking_tool(api.url))
    before = await scrape(fabric)

    await place(fabric, new_call())
    await place(fabric, new_call("NoSuchTool"))
    await fabric.drained()
    after = await scrape(fabric)

    calls = "midcall_calls_total"
    assert grew(before, after, calls, tool="BookAppointment", status="success", code="") == 1
    assert grew(before, after, calls, tool="", status="error", code="unknown_tool") == 1
    assert grew(before, after, "midcall_pending_seconds_count") == 1
    assert grew(before, after, "midcall_result_seconds_count") == 1
    assert after[("midcall_in_flight", (("consumer", "midcall-http-executor"),))] == 0


def test_services_without_an_api_serve_metrics_on_their_own_port() -> None:
    port = free_port()
    metrics.serve(port, "127.0.0.1")

    response = httpx.get(f"http://127.0.0.1:{port}/metrics")

    assert response.status_code == 200
    assert "midcall_calls_total" in response.text


def test_a_taken_metrics_port_is_logged_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        metrics.serve(taken.getsockname()[1], "127.0.0.1")

    assert "metrics not served" in caplog.text


async def until_healthz(probe: httpx.AsyncClient, status: int) -> httpx.Response:
    """Ask /healthz until it answers ``status`` (nats-py notices a lost server in its time)."""
    async with asyncio.timeout(15):
        while True:
            response = await probe.get("/healthz")
            if response.status_code == status:
                return response
            await asyncio.sleep(0.05)


async def test_a_service_without_an_api_is_ready_while_it_takes_work_from_nats(
    tmp_path: Path,
) -> None:
    server = NatsServer(tmp_path / "nats")
    url = server.start()
    port = free_port()
    settings = Settings(nats_url=url, metrics_port=port, host="127.0.0.1", data_dir=tmp_path)
    service = HttpExecutorService(settings, secrets={})
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as probe:
        await service.start()
        ready = await probe.get("/healthz")
        server.kill()  # NATS is gone: the service cannot take work, whatever its process does
        lost = await until_healthz(probe, 503)
        alive = await probe.get("/metrics")
        server = NatsServer(tmp_path / "nats", port=int(url.rsplit(":", 1)[1]))
        server.start()
        back = await until_healthz(probe, 200)
    await service.stop()
    await server.astop()

    assert (ready.status_code, ready.json()) == (200, {"status": "ok"})
    assert (lost.status_code, lost.json()) == (503, {"status": "unavailable"})
    assert alive.status_code == 200  # liveness: the process itself still answers
    assert back.json() == {"status": "ok"}
