"""Seeing what the services do: OpenTelemetry tracing, one tracer provider per process, and
the Prometheus metrics they count."""
