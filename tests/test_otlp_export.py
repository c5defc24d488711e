"""Spans leave the process over OTLP/HTTP exactly when an endpoint is configured."""

import asyncio

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from shared.observability.tracing import build_provider, exporters
from tests.support.api import RecordingApi


async def test_spans_are_exported_to_the_configured_endpoint(
    api: RecordingApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    api.reply("POST", "/v1/traces", json={})
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", api.url)
    provider = build_provider("midcall-dispatcher")

    with provider.get_tracer("test").start_as_current_span("dispatch"):
        pass
    await asyncio.to_thread(provider.shutdown)  # flushes the batch, as `midcall run` does

    [received] = await api.wait_for(1)
    request = ExportTraceServiceRequest.FromString(received.body)
    [resource_spans] = request.resource_spans
    attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
    assert attributes["service.name"] == "midcall-dispatcher"
    assert [s.name for s in resource_spans.scope_spans[0].spans] == ["dispatch"]


def test_nothing_is_exported_without_an_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)

    assert exporters() == ()
