"""Search latency over 100,000 messages: `python -m bench.search [--messages N] [--queries Q]`.

Its own stack (chatd.devstack.Stack: Postgres, Redis, workers, nginx). 200 users in 400
conversations (1:1 and groups of 5 to 50), `--messages` text messages stored with the group
commit's own function, words drawn Zipf-like from a vocabulary of 20,000 made-up words (so some
words are in tens of thousands of messages and most in a few), then ANALYZE. Each query is
`GET /v1/search` through nginx by a random user for one or two words (common, middling or rare),
timed at the client, one at a time: p50/p95/p99 and the slowest, and the same for the SQL alone
(SearchStore.search on a pool). Prints JSON. No timing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench.chatstack import BENCH_ENV
from bench.procstat import loadavg
from bench.stats import percentile
from chatd.devstack import Stack
from chatd.security import hash_token, new_token
from chatd.storage.search import SearchStore

VOCABULARY = 20_000
USERS = 200
CONVERSATIONS = 400


def vocabulary(rng: random.Random) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    words: set[str] = set()
    while len(words) < VOCABULARY:
        words.add("".join(rng.choice(letters) for _ in range(rng.randint(4, 9))))
    return sorted(words)


def zipf_weights(n: int) -> list[float]:
    return [1.0 / (rank + 1) for rank in range(n)]


async def populate(dsn: str, messages: int, rng: random.Random) -> tuple[list[tuple[int, str]], list[str]]:
    """Users (id, token), conversations and messages straight into Postgres."""
    conn = await asyncpg.connect(dsn)
    try:
        users: list[tuple[int, str]] = []
        for n in range(USERS):
            uid = await conn.fetchval(
                "INSERT INTO users (username, password_hash) VALUES ($1, 'x') RETURNING id",
                f"s{n}-{rng.random()}",
            )
            token = new_token()
            await conn.execute(
                "INSERT INTO tokens (token_hash, user_id) VALUES ($1, $2)", hash_token(token), uid
            )
            users.append((uid, token))
        cids: list[tuple[int, list[int]]] = []
        for n in range(CONVERSATIONS):
            size = 2 if n % 2 == 0 else rng.randint(5, 50)
            members = rng.sample([u for u, _ in users], size)
            cid = await conn.fetchval(
                "INSERT INTO conversations (kind, title, created_by, member_count)"
                " VALUES ('group', 'g', $1, $2) RETURNING id",
                members[0],
                size,
            )
            await conn.executemany(
                "INSERT INTO members (conversation_id, user_id, took_part) VALUES ($1, $2, true)",
                [(cid, m) for m in members],
            )
            cids.append((cid, members))
        words = vocabulary(rng)
        cumulative = list(itertools.accumulate(zipf_weights(len(words))))
        batch = 2000
        for start in range(0, messages, batch):
            rows = []
            for i in range(start, min(messages, start + batch)):
                cid, members = rng.choice(cids)
                body = " ".join(rng.choices(words, cum_weights=cumulative, k=rng.randint(3, 25)))
                rows.append((cid, rng.choice(members), f"b{i}", body, "text"))
            await conn.fetch(
                "SELECT count(*) FROM chatd_append_many($1, $2, $3, $4, $5)",
                *map(list, zip(*rows, strict=True)),
            )
        await conn.execute("ANALYZE")
        return users, words
    finally:
        await conn.close()


def queries(rng: random.Random, words: list[str], count: int) -> list[str]:
    """A third each: a common word (top 100), a middling one (rank 100-2,000), a rare one
    (2,000+); every other query adds a second word from anywhere."""
    out = []
    for n in range(count):
        band = (words[:100], words[100:2000], words[2000:])[n % 3]
        q = rng.choice(band)
        if n % 2:
            q += " " + rng.choice(words[:2000])
        out.append(q)
    return out


def summary(samples: list[float]) -> dict[str, Any]:
    ordered = sorted(samples)
    found = {f"p{q}": percentile(ordered, q) for q in (50, 95, 99)}
    return {**{k: round(v or 0, 2) for k, v in found.items()}, "max": round(ordered[-1], 2)}


async def measure(
    stack: Stack, users: list[tuple[int, str]], qs: list[str], rng: random.Random
) -> dict[str, Any]:
    http_ms: list[float] = []
    sql_ms: list[float] = []
    hits = 0
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as client:
        for q in qs[:20]:  # warm up caches and connections
            await client.get(
                "/v1/search", params={"q": q}, headers={"authorization": f"Bearer {users[0][1]}"}
            )
        for q in qs:
            uid, token = rng.choice(users)
            started = time.perf_counter()
            response = await client.get(
                "/v1/search", params={"q": q}, headers={"authorization": f"Bearer {token}"}
            )
            http_ms.append((time.perf_counter() - started) * 1000)
            response.raise_for_status()
            hits += len(response.json()["results"])
    pool = await asyncpg.create_pool(stack.database_url, min_size=1, max_size=1)
    try:
        store = SearchStore(pool, "english")
        for q in qs:
            uid, _ = rng.choice(users)
            started = time.perf_counter()
            await store.search(uid, q, conversation_id=None, before=None, limit=21)
            sql_ms.append((time.perf_counter() - started) * 1000)
    finally:
        await pool.close()
    return {
        "http_ms": summary(http_ms),
        "sql_ms": summary(sql_ms),
        "results_per_query": round(hits / len(qs), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=600)
    args = parser.parse_args()
    rng = random.Random(21)
    root = Path(tempfile.mkdtemp(prefix="chatd-bench-search-"))
    root.chmod(0o755)
    stack = Stack(root=root / "stack", workers=2, extra_env=BENCH_ENV)
    try:
        stack.up()
        started = time.monotonic()
        users, words = asyncio.run(populate(stack.database_url, args.messages, rng))
        loaded_s = round(time.monotonic() - started, 1)
        load_before = loadavg()
        result = asyncio.run(measure(stack, users, queries(rng, words, args.queries), rng))
        print(
            json.dumps(
                {
                    "messages": args.messages,
                    "queries": args.queries,
                    "load_s": loaded_s,
                    "loadavg_before": load_before,
                    "loadavg_after": loadavg(),
                    **result,
                },
                indent=1,
            )
        )
    finally:
        stack.down()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
