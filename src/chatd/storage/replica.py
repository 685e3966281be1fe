"""Reads that may go to a Postgres streaming replica (CHATD_DATABASE_REPLICA_URL, issue 25).

History pages, catch-up and unread counts are the reads a replica can take: each says which
seq of each conversation it needs (one the caller knows is committed: the head it read from
the primary or that the hub dispatched, the `before` of a page). A read goes to the replica
only when

- the replica is fresh enough: its replay is within CHATD_DATABASE_REPLICA_MAX_LAG_S of the
  primary's WAL (the lag probe below, cached for PROBE_INTERVAL_S), and
- in the same snapshot as the read, the replica's `conversations.last_seq` of every
  conversation the read covers is at least the seq it needs. Messages and `last_seq` are
  written in one transaction, so the replica then has every event up to that seq: the answer
  is what the primary would give for it. Otherwise the read goes to the primary ("behind").

Anything the replica fails at (down, a timeout, a probe error) sends the read to the primary
too ("error"), and the replica is left alone for ERROR_BACKOFF_S. Writes never come here.
With no replica URL every read goes to the primary pool exactly as before.

The lag is measured without comparing clocks: each probe notes the primary's WAL position
(`pg_current_wal_lsn()`) at a time of this process's monotonic clock; the replica has
replayed everything up to the newest noted position its `pg_last_wal_replay_lsn()` reaches,
so its lag is at most the time since that note.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

import asyncpg

log = logging.getLogger("chatd.storage")
T = TypeVar("T")
# What a read query runs on: the primary's pool, or a replica connection (both have fetch*).
Reader = asyncpg.Pool | asyncpg.Connection | asyncpg.pool.PoolConnectionProxy

PROBE_INTERVAL_S = 0.25  # a lag measurement is reused this long
PROBE_TIMEOUT_S = 1.0
READ_TIMEOUT_S = 5.0  # a replica slower than this: the read goes to the primary
ERROR_BACKOFF_S = 2.0  # after a replica error, reads go to the primary this long
SAMPLES_MAX = 1000

_PRIMARY_LSN = "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint"
# NULL on a server not in recovery (a promoted replica): nothing to replay, never behind.
_REPLAY_LSN = "SELECT pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0')::bigint"
_HEADS = "SELECT id, last_seq FROM conversations WHERE id = ANY($1::bigint[])"


class Replica:
    """The replica pool (created on first use) and the decision where each read goes.

    `observe(server, reason)` is called once per read: server "primary" or "replica", reason
    "" or why a read that could have gone to the replica did not ("behind", "lag", "error").
    """

    def __init__(
        self,
        primary: asyncpg.Pool,
        url: str = "",
        max_lag_s: float = 5.0,
        open_pool: Callable[[str], Awaitable[asyncpg.Pool]] | None = None,
    ) -> None:
        self._primary = primary
        self.url = url
        self.max_lag_s = max_lag_s
        self._open_pool = open_pool or asyncpg.create_pool  # storage.create_pool, from the runtime
        self._pool: asyncpg.Pool | None = None
        self._samples: collections.deque[tuple[float, int]] = collections.deque(maxlen=SAMPLES_MAX)
        self._verdict = "lag"  # "" (fresh), "lag" or "error"
        self._until = 0.0  # monotonic time the verdict holds until
        self._probing: asyncio.Task[str] | None = None
        self.observe: Callable[[str, str], None] = lambda server, reason: None

    @property
    def enabled(self) -> bool:
        return bool(self.url)

    async def read(self, need: Mapping[int, int] | None, query: Callable[[Reader], Awaitable[T]]) -> T:
        """`query` on the replica if it has every conversation of `need` up to its seq and is
        within the lag bound, else on the primary. `need` None: the primary."""
        if not self.url or need is None:
            return await query(self._primary)
        reason = await self._fresh()
        if not reason:
            try:
                async with asyncio.timeout(READ_TIMEOUT_S):
                    answered = await self._on_replica(need, query)
                if answered:
                    self.observe("replica", "")
                    return answered[0]
                reason = "behind"
            except Exception as exc:  # any failure of the replica: the primary answers
                reason = self._failed("read", exc)
        self.observe("primary", reason)
        return await query(self._primary)

    async def _on_replica(self, need: Mapping[int, int], query: Callable[[Reader], Awaitable[T]]) -> list[T]:
        """[the answer], or [] if the replica has not replayed what `need` says."""
        assert self._pool is not None
        async with self._pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            # One snapshot: the heads checked are those of the rows the query reads.
            heads = {row["id"]: row["last_seq"] for row in await conn.fetch(_HEADS, list(need))}
            if any(heads.get(cid, 0) < seq for cid, seq in need.items()):
                return []
            return [await query(conn)]

    def _failed(self, what: str, exc: BaseException) -> str:
        log.warning("replica %s failed, reading from the primary", what, extra={"error": repr(exc)})
        self._verdict, self._until = "error", time.monotonic() + ERROR_BACKOFF_S
        return "error"

    async def _fresh(self) -> str:
        """Why the replica is not to be read now ("lag" or "error"); empty if it may be."""
        if time.monotonic() < self._until:
            return self._verdict
        if self._probing is None or self._probing.done():  # concurrent readers share one probe
            self._probing = asyncio.get_running_loop().create_task(self._probe())
        probing = self._probing
        try:
            return await asyncio.shield(probing)
        finally:
            if probing.done() and self._probing is probing:
                self._probing = None

    async def _probe(self) -> str:
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_S):
                if self._pool is None:
                    self._pool = await self._open_pool(self.url)
                noted = time.monotonic()
                primary_lsn: int = await self._primary.fetchval(_PRIMARY_LSN)
                replayed: int | None = await self._pool.fetchval(_REPLAY_LSN)
        except Exception as exc:
            return self._failed("probe", exc)
        self._verdict = "" if self.lag(noted, primary_lsn, replayed) <= self.max_lag_s else "lag"
        self._until = time.monotonic() + PROBE_INTERVAL_S
        return self._verdict

    def lag(self, noted: float, primary_lsn: int, replayed: int | None) -> float:
        """At most how far (seconds) the replica is behind, from the positions noted so far."""
        self._samples.append((noted, primary_lsn))
        if replayed is None or replayed >= primary_lsn:
            self._samples.clear()
            self._samples.append((noted, primary_lsn))
            return 0.0
        caught_up = None  # the newest position the replica has replayed past, and when
        while self._samples and self._samples[0][1] <= replayed:
            caught_up = self._samples.popleft()
        if caught_up is None:  # behind every position noted: since when is not known
            return float("inf")
        self._samples.appendleft(caught_up)
        return time.monotonic() - caught_up[0]

    async def close(self) -> None:
        if self._probing is not None:
            self._probing.cancel()
        if self._pool is not None:
            await self._pool.close()
