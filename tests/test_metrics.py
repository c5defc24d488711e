"""Prometheus metrics as a scraper reads them from /metrics."""

import socket

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from shared.fabric.nats_server import free_port
from shared.observability import metrics
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
