"""HTTP executor: renders a tool's request, sends it within limits, reports what happened."""
