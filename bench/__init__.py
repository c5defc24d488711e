"""Benchmarks: they print numbers; targets live here, never in timed unit tests."""
