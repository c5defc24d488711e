"""One trace, end to end: the runtime's traceparent, every service, the customer's API."""

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services.demo.runtime import new_traceparent
from tests.support.api import RecordingApi
from tests.support.fabric import Fabric
from tests.test_spine import AGENT, booking_tool, new_call, place


async def test_a_single_trace_spans_runtime_services_and_the_api(
    fabric: Fabric, api: RecordingApi, spans: InMemorySpanExporter
) -> None:
    api.reply("POST", "/book", json={"success": True, "stylist_name": "Ana"})
    await fabric.register(AGENT, booking_tool(api.url))
    traceparent, trace_id = new_traceparent()
    runtime_span_id = int(traceparent.split("-")[2], 16)

    result = await place(fabric, new_call(), traceparent=traceparent)
    await fabric.drained()

    ours = [s for s in spans.get_finished_spans() if s.context.trace_id == int(trace_id, 16)]
    names = {span.name for span in ours}
    assert {"dispatch", "execute", "HTTP POST", "inject", "bill"} <= names
    roots = [s for s in ours if s.parent is not None and s.parent.span_id == runtime_span_id]
    assert roots, "the first span continues the runtime's traceparent"
    [client_span] = [s for s in ours if s.name == "HTTP POST"]
    [received] = api.received
    assert received.header("traceparent") == (
        f"00-{trace_id}-{client_span.context.span_id:016x}-01"
    )
    assert result["trace_id"] == trace_id
    secret_free = [str(s.attributes) for s in ours]
    assert not any("s3cr3t" in text for text in secret_free)
