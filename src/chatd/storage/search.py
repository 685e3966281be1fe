"""Full-text search over messages: the index (built for CHATD_SEARCH_LANGUAGE) and the query.

The index is an expression index on the message row's own `body`, so what an edit or a
deletion does to the body it does to the index too: there is no second copy of the text.
Text search configurations are identifiers, not parameters, in the index's expression, and the
query must spell the same expression for Postgres to use it: the name is checked against
`NAME` (and by Postgres, as a regconfig) before it is written into SQL.
"""

from __future__ import annotations

import re
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from chatd.storage.records import Kind

NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
INDEX_PREFIX = "messages_search_"
SNIPPET_CHARS = 160  # about; whole words are kept
CONTEXT_WORDS = 6  # words shown before the first hit when the text is cut

Conn = asyncpg.Connection | PoolConnectionProxy


def _checked(language: str) -> str:
    if not NAME.match(language):
        raise ValueError(f"not a text search configuration name: {language!r}")
    return language


def index_name(language: str) -> str:
    return INDEX_PREFIX + _checked(language)


def vector(language: str, column: str = "body") -> str:
    """The indexed expression, spelled exactly as the index has it."""
    return f"to_tsvector('{_checked(language)}'::regconfig, {column})"


async def index_ready(conn: Conn, language: str) -> bool:
    found = await conn.fetchval(
        "SELECT i.indisvalid FROM pg_class c JOIN pg_index i ON i.indexrelid = c.oid"
        " WHERE c.relname = $1 AND c.relkind = 'i'",
        index_name(language),
    )
    return bool(found)


async def ensure_index(conn: asyncpg.Connection, language: str) -> bool:
    """Build the GIN index for `language` (CONCURRENTLY: sends go on meanwhile) and drop the
    indexes of other languages; True if it built one. Unknown configurations raise."""
    await conn.fetchval("SELECT $1::regconfig", language)  # "text search configuration does not exist"
    name = index_name(language)
    built = False
    if not await index_ready(conn, language):
        await conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")  # a failed build's leftover
        await conn.execute(
            f"CREATE INDEX CONCURRENTLY {name} ON messages USING gin ({vector(language)})"
            f" WHERE kind = '{Kind.TEXT}'"
        )
        built = True
    others = await conn.fetch(
        "SELECT relname FROM pg_class WHERE relkind = 'i' AND relname LIKE $1 AND relname <> $2",
        INDEX_PREFIX.replace("_", r"\_") + "%",
        name,
    )
    for row in others:
        await conn.execute(f'DROP INDEX CONCURRENTLY IF EXISTS "{row["relname"]}"')
    return built


def segments(tokens: list[str], hits: list[bool]) -> list[dict[str, Any]]:
    """The parser's tokens (the whole text, in order) as [{"text", "hit"}] around the first
    hit, cut to about SNIPPET_CHARS at token boundaries ("…" where cut). Plain text, never
    markup: the client renders it as text."""
    first = next((i for i, hit in enumerate(hits) if hit), 0)
    start, words = first, 0
    while start > 0 and words < CONTEXT_WORDS:
        start -= 1
        words += bool(tokens[start].strip())
    if sum(map(len, tokens[:first])) + sum(map(len, tokens[first:])) <= SNIPPET_CHARS:
        start = 0  # it all fits
    out: list[dict[str, Any]] = [{"text": "…", "hit": False}] if start else []
    used = 0
    end = start
    while end < len(tokens) and (used < SNIPPET_CHARS or end <= first):
        used += len(tokens[end])
        end += 1
    for token, hit in zip(tokens[start:end], hits[start:end], strict=True):
        if out and out[-1]["hit"] == hit:
            out[-1]["text"] += token
        else:
            out.append({"text": token, "hit": hit})
    if end < len(tokens):
        out.append({"text": "…", "hit": False})
    if start and len(out) > 1 and not out[1]["hit"]:  # merge the leading "…" into the text
        out[1]["text"] = "…" + out[1]["text"]
        out.pop(0)
    if end < len(tokens) and len(out) > 1 and not out[-2]["hit"]:
        out[-2]["text"] += "…"
        out.pop()
    return out


class SearchStore:
    def __init__(self, pool: asyncpg.Pool, language: str) -> None:
        self._pool = pool
        lang = _checked(language)
        # Where the caller may look: each conversation they are a member of (all of it, like
        # history), and each they were removed from (or left) up to the seq it had reached then.
        # Newest first; `before` is the last result's message id (keyset paging).
        self._query = (
            "WITH scope AS ("
            "  SELECT conversation_id AS cid, NULL::bigint AS upto FROM members WHERE user_id = $1"
            "  UNION ALL"
            "  SELECT h.conversation_id, h.left_seq FROM member_history h WHERE h.user_id = $1"
            "   AND NOT EXISTS (SELECT 1 FROM members m"
            "                   WHERE m.conversation_id = h.conversation_id AND m.user_id = $1)"
            "), found AS ("
            "  SELECT m.id, m.conversation_id, m.seq, m.sender_id, m.created_at, m.body"
            "  FROM messages m JOIN scope s ON s.cid = m.conversation_id"
            f"  WHERE m.kind = '{Kind.TEXT}'"
            f"   AND {vector(lang, 'm.body')} @@ websearch_to_tsquery($2::regconfig, $3)"
            "   AND (s.upto IS NULL OR m.seq <= s.upto)"
            "   AND ($4::bigint IS NULL OR m.conversation_id = $4)"
            "   AND ($5::bigint IS NULL OR m.id < $5)"
            "  ORDER BY m.id DESC LIMIT $6"
            ")"
            # A hit is a token whose lexemes meet the query words' (the parser's tokens put
            # together are the whole text, markup-looking parts included).
            " SELECT f.id, f.conversation_id, f.seq, f.sender_id, f.created_at, t.tokens, t.hits"
            " FROM found f, LATERAL ("
            "  SELECT array_agg(d.token ORDER BY d.n) AS tokens,"
            "   array_agg(coalesce(d.lexemes && tsvector_to_array(to_tsvector($2::regconfig, $3)), false)"
            "             ORDER BY d.n) AS hits"
            "  FROM ts_debug($2::regconfig, f.body)"
            "   WITH ORDINALITY AS d(alias, description, token, dictionaries, dictionary, lexemes, n)"
            " ) t ORDER BY f.id DESC"
        )
        self._lang = lang

    async def search(
        self, uid: int, text: str, *, conversation_id: int | None, before: int | None, limit: int
    ) -> list[dict[str, Any]]:
        rows = await self._pool.fetch(self._query, uid, self._lang, text, conversation_id, before, limit)
        return [
            {
                "id": row["id"],
                "conversation_id": row["conversation_id"],
                "seq": row["seq"],
                "sender_id": row["sender_id"],
                "created_at": row["created_at"],
                "snippet": segments(list(row["tokens"] or []), list(row["hits"] or [])),
            }
            for row in rows
        ]
