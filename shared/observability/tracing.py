"""OpenTelemetry set-up: one tracer provider per process.

Spans are always made (so the trace id reaches the customer's API in
``traceparent``); they are exported only when ``OTEL_EXPORTER_OTLP_ENDPOINT``
(or the traces-specific variable) is set.
"""

import os
from functools import cache

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

TRACER_NAME = "midcall"
OTLP_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


def build_provider(
    service_name: str, sample_ratio: float = 1.0, processors: tuple[SpanProcessor, ...] = ()
) -> TracerProvider:
    """A provider for one service; parent-based, so a sampled runtime trace is kept whole."""
    provider = TracerProvider(
        resource=Resource.create({SERVICE_NAME: service_name}),
        sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
    )
    for processor in processors or exporters():
        provider.add_span_processor(processor)
    return provider


def exporters() -> tuple[SpanProcessor, ...]:
    """OTLP/HTTP export when the standard OTEL variables name an endpoint; nothing otherwise."""
    if not any(os.environ.get(name) for name in OTLP_VARIABLES):
        return ()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return (BatchSpanProcessor(OTLPSpanExporter()),)


@cache
def tracer() -> trace.Tracer:
    # Made once: get_tracer builds a new tracer each call, a cost on every hop.
    # Before a provider is set this is a proxy that follows the one set later.
    return trace.get_tracer(TRACER_NAME)


def current_trace_id() -> str | None:
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None
