"""Scenario 5 (later): read marks and presence churn: a stub until the harness drives them."""

from __future__ import annotations

from typing import Any

from bench.context import Ctx


def run(ctx: Ctx) -> dict[str, Any]:
    return {"skipped": "read marks and presence churn: not benchmarked yet (issue 6, scenario 5 stub)"}
