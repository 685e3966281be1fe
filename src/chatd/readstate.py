"""Read pointers' hot state in Redis. Every operation here is O(log members) or better.

``chatd:rr:<cid>``  sorted set: user id -> last_read_seq of members who share read state; the
                    readers of message m are ``ZCOUNT(m.seq, +inf)`` minus its sender.
``chatd:lr:<uid>``  hash: conversation id -> the user's own last_read_seq (all conversations).
``chatd:rdirty``    set of ``cid:uid`` pairs changed since the last flush to Postgres.
``chatd:rflushed-before``  a Unix time: every pointer changed before it is in Postgres (metrics).
Both the sorted set and the hash carry a sentinel (member ``0`` scored -1, field ``_``) so a key
lost to a Redis restart or FLUSHALL is told apart from "nobody has read anything": it is then
rebuilt from Postgres on demand.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable

import redis.asyncio as aioredis

DIRTY = "chatd:rdirty"
FLUSHING = "chatd:rflushing"
FLUSH_LOCK = "chatd:rflush-lock"
FLUSHED_BEFORE = "chatd:rflushed-before"
SENTINEL = "0"


def room_key(cid: int) -> str:
    return f"chatd:rr:{cid}"


def user_key(uid: int) -> str:
    return f"chatd:lr:{uid}"


# KEYS: room, user, dirty; ARGV: uid, cid, seq, shared -> {status, previous}
# status 1 moved, 0 no-op (older or equal), -1 room needs loading, -2 user needs loading.
_MARK = """
if redis.call('EXISTS', KEYS[2]) == 0 then return {-2, 0} end
if ARGV[4] == '1' and redis.call('EXISTS', KEYS[1]) == 0 then return {-1, 0} end
local old = tonumber(redis.call('HGET', KEYS[2], ARGV[2]) or '0')
local seq = tonumber(ARGV[3])
if seq <= old then return {0, old} end
redis.call('HSET', KEYS[2], ARGV[2], seq)
if ARGV[4] == '1' then redis.call('ZADD', KEYS[1], 'GT', seq, ARGV[1]) end
redis.call('SADD', KEYS[3], ARGV[2] .. ':' .. ARGV[1])
return {1, old}
"""

# KEYS: room; ARGV: seq1, uid1, seq2, uid2, ... (GT: never lowers a newer live mark)
_LOAD_ROOM = """
redis.call('ZADD', KEYS[1], 'GT', -1, '0')
for i = 1, #ARGV, 2 do redis.call('ZADD', KEYS[1], 'GT', ARGV[i], ARGV[i + 1]) end
return 1
"""

# KEYS: user; ARGV: cid1, seq1, ...; keeps the larger of the stored and the loaded value
_LOAD_USER = """
for i = 1, #ARGV, 2 do
  local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '-1')
  if tonumber(ARGV[i + 1]) > cur then redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
redis.call('HSET', KEYS[1], '_', '1')
return 1
"""

# KEYS: range hash, window key; ARGV: lo, hi, window_ms -> 1 when this caller opened the window
_WIDEN = """
local lo = tonumber(redis.call('HGET', KEYS[1], 'lo') or ARGV[1])
local hi = tonumber(redis.call('HGET', KEYS[1], 'hi') or ARGV[2])
redis.call('HSET', KEYS[1], 'lo', math.min(lo, tonumber(ARGV[1])), 'hi', math.max(hi, tonumber(ARGV[2])))
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[3]) then return 1 end
return 0
"""

_TAKE_RANGE = """
local r = redis.call('HMGET', KEYS[1], 'lo', 'hi')
redis.call('DEL', KEYS[1])
return r
"""

# KEYS: room; ARGV: seq, uid
_SHARE = """
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('ZADD', KEYS[1], 'GT', ARGV[1], ARGV[2]) end
return 1
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

Loader = Callable[[], Awaitable[Iterable[tuple[int, int]]]]


class ReadState:
    def __init__(self, redis: aioredis.Redis, timeout_s: float | None = None) -> None:
        self.redis = redis
        # Bounds each Redis call of a read mark (a hung Redis answers `unavailable`, it does
        # not hold up the connection's later frames); the Postgres loads are not bounded.
        self._timeout_s = timeout_s
        self._mark = redis.register_script(_MARK)
        self._load_room = redis.register_script(_LOAD_ROOM)
        self._load_user = redis.register_script(_LOAD_USER)
        self._widen = redis.register_script(_WIDEN)
        self._take_range = redis.register_script(_TAKE_RANGE)
        self._release = redis.register_script(_RELEASE)
        self._share = redis.register_script(_SHARE)

    async def mark(
        self, uid: int, cid: int, seq: int, shared: bool, load_room: Loader, load_user: Loader
    ) -> tuple[bool, int]:
        """Move the pointer forward; returns (moved, previous). Loads lost state as needed."""
        for _ in range(3):
            async with asyncio.timeout(self._timeout_s):
                status, previous = await self._mark(
                    keys=[room_key(cid), user_key(uid), DIRTY], args=[uid, cid, seq, int(shared)]
                )
            if status == -1:
                pointers = await load_room()
                async with asyncio.timeout(self._timeout_s):
                    await self.load_room(cid, pointers)
            elif status == -2:
                pointers = await load_user()
                async with asyncio.timeout(self._timeout_s):
                    await self.load_user(uid, pointers)
            else:
                return status == 1, int(previous)
        raise RuntimeError("read state could not be loaded")

    async def load_room(self, cid: int, pointers: Iterable[tuple[int, int]]) -> None:
        args: list[int] = []
        for uid, seq in pointers:
            args += [seq, uid]
        await self._load_room(keys=[room_key(cid)], args=args)

    async def load_user(self, uid: int, pointers: Iterable[tuple[int, int]]) -> None:
        args: list[int] = []
        for cid, seq in pointers:
            args += [cid, seq]
        await self._load_user(keys=[user_key(uid)], args=args)

    async def room_loaded(self, cid: int) -> bool:
        return bool(await self.redis.exists(room_key(cid)))

    async def user_pointers(self, uid: int) -> dict[int, int] | None:
        """The user's pointers, or None when they must be loaded from Postgres first."""
        raw = await self.redis.hgetall(user_key(uid))
        if not raw:
            return None
        return {int(k): int(v) for k, v in raw.items() if _text(k) != "_"}

    async def counts(self, cid: int, messages: list[tuple[int, int | None]]) -> list[int]:
        """Readers of each (seq, sender) message: pointers >= seq, the sender not counted."""
        key = room_key(cid)
        async with self.redis.pipeline(transaction=False) as pipe:
            for seq, sender in messages:
                pipe.zcount(key, seq, "+inf")
                pipe.zscore(key, str(sender or 0))
            replies = await pipe.execute()
        result = []
        for index, (seq, _) in enumerate(messages):
            count, sender_seq = replies[2 * index], replies[2 * index + 1]
            result.append(int(count) - (1 if sender_seq is not None and sender_seq >= seq else 0))
        return result

    async def readers(self, cid: int, seq: int) -> list[int]:
        members = await self.redis.zrangebyscore(room_key(cid), seq, "+inf")
        return sorted(int(_text(m)) for m in members if isinstance(m, bytes | str) and _text(m) != SENTINEL)

    async def forget(self, cid: int, uids: list[int]) -> None:
        """Members removed: they no longer count, and their own pointer for it goes."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrem(room_key(cid), *(str(u) for u in uids))
            for uid in uids:
                pipe.hdel(user_key(uid), str(cid))
            await pipe.execute()

    async def set_shared(self, uid: int, pointers: dict[int, int], shared: bool) -> None:
        """A room not loaded stays so: it is rebuilt from Postgres, sentinel and all, on use."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for cid, seq in pointers.items():
                if shared:
                    await self._share(keys=[room_key(cid)], args=[seq, uid], client=pipe)
                else:
                    pipe.zrem(room_key(cid), str(uid))
            await pipe.execute()

    # -- coalescing group pushes ---------------------------------------------------------
    async def widen(self, cid: int, lo: int, hi: int, window_ms: int) -> bool:
        """Record that seqs lo..hi changed; True if the caller must publish after the window."""
        async with asyncio.timeout(self._timeout_s):
            opened = await self._widen(
                keys=[f"chatd:rrange:{cid}", f"chatd:rwindow:{cid}"], args=[lo, hi, window_ms]
            )
        return bool(opened)

    async def take_range(self, cid: int) -> tuple[int, int] | None:
        lo, hi = await self._take_range(keys=[f"chatd:rrange:{cid}"])
        return None if lo is None else (int(lo), int(hi))

    # -- flushing ------------------------------------------------------------------------
    async def acquire_flush_lock(self, ttl_ms: int) -> str | None:
        token = secrets.token_hex(8)
        ok = await self.redis.set(FLUSH_LOCK, token, nx=True, px=ttl_ms)
        return token if ok else None

    async def release_flush_lock(self, token: str) -> None:
        await self._release(keys=[FLUSH_LOCK], args=[token])

    async def take_dirty(self) -> list[tuple[int, int, int]] | None:
        """(cid, uid, seq) to write, None if nothing is dirty. A crashed flusher's batch first."""
        if not await self.redis.exists(FLUSHING):
            if not await self.redis.exists(DIRTY):
                return None
            await self.redis.rename(DIRTY, FLUSHING)
        pairs = [_text(p).split(":") for p in await self.redis.smembers(FLUSHING)]
        async with self.redis.pipeline(transaction=False) as pipe:
            for cid, uid in pairs:
                pipe.hget(user_key(int(uid)), cid)
            seqs = await pipe.execute()
        return [(int(c), int(u), int(s)) for (c, u), s in zip(pairs, seqs, strict=True) if s is not None]

    async def flushed(self) -> None:
        await self.redis.delete(FLUSHING)

    async def mark_flushed_before(self, at: float) -> None:
        await self.redis.set(FLUSHED_BEFORE, repr(at))

    async def backlog(self) -> tuple[int, float]:
        """Pointers not yet in Postgres, and an upper bound on the oldest one's age (seconds)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.scard(DIRTY)
            pipe.scard(FLUSHING)
            pipe.set(FLUSHED_BEFORE, repr(time.time()), nx=True, get=True)  # first time: from now
            dirty, flushing, before = await pipe.execute()
        pending = int(dirty) + int(flushing)
        if not pending or before is None:
            return pending, 0.0
        return pending, max(0.0, time.time() - float(_text(before)))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
