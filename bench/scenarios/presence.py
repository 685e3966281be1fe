"""Scenario 5 (later): read marks and presence churn. chatd does not implement them yet."""

from __future__ import annotations

from typing import Any

from bench.context import Ctx


def run(ctx: Ctx) -> dict[str, Any]:
    return {"skipped": "read marks and presence are not implemented in chatd yet (issue 6, scenario 5)"}
