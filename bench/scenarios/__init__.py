"""Scenarios of issue 6; each `run(ctx)` returns a JSON-able result."""
