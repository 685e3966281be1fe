"""Targets (issue 6) and docs/benchmarks.md with PNG plots. Placeholder until the full report."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    return []


def write_docs(results: dict[str, Any], path: Path) -> None:
    pass
