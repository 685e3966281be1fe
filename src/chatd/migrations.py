"""Numbered plain-SQL migrations, each applied in its own transaction under an advisory lock.

This module finds and orders the files; the SQL that applies them is in storage/schema.py."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from chatd.storage import connect, schema, search

_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations_dir() -> Path:
    here = Path(__file__).resolve().parent
    for candidate in (here / "migrations", here.parent.parent / "migrations"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("migrations directory not found next to the chatd package")


def load(directory: Path | None = None) -> list[Migration]:
    found = []
    for path in sorted((directory or migrations_dir()).iterdir()):
        match = _NAME.match(path.name)
        if match:
            found.append(Migration(int(match.group(1)), path.name, path.read_text()))
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migrations must be numbered 0001.. without gaps, found {versions}")
    return found


async def migrate(dsn: str, search_language: str = "english") -> list[str]:
    """Apply what is missing, then build the search index for the language if it is not there
    yet; returns the names applied (and the index's, when built)."""
    conn = await connect(dsn)
    try:
        await schema.lock(conn)
        try:
            await schema.ensure_table(conn)
            done = await schema.applied_versions(conn)
            applied = []
            for migration in load():
                if migration.version not in done:
                    await schema.apply(conn, migration.version, migration.name, migration.sql)
                    applied.append(migration.name)
            if await search.ensure_index(conn, search_language):
                applied.append(search.index_name(search_language))
            return applied
        finally:
            await schema.unlock(conn)
    finally:
        await conn.close()


async def missing(conn: schema.Conn) -> list[str]:
    """Names of migrations this code needs that the database has not applied."""
    done = await schema.applied_versions(conn)
    return [m.name for m in load() if m.version not in done]
