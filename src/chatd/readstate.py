"""Read pointers' hot state in Redis. Every operation here is O(log members) or better, except
a sharing change, which goes over the user's own conversations once.

``chatd:rr:<cid>``  sorted set: user id -> last_read_seq of the members others may see read:
                    those who share read state and took part in the conversation (§4.9); the
                    readers of message m are ``ZCOUNT(m.seq, +inf)`` minus its sender.
``chatd:lr:<uid>``  hash: conversation id -> the user's own last_read_seq (all conversations).
``chatd:lm:<uid>``  hash, loaded with it: ``share`` the user's sharing setting (1/0),
                    authoritative for the marks: set in the same script that takes the user's
                    pointers out of (or back into) the rooms, so a mark is either before the
                    change (and moved by it) or after it (and sees it); ``p:<cid>`` 1 once the
                    user took part in cid, 0 once Postgres said they had not (a cache: a
                    missing field is checked in Postgres; 0 is set only if the field is
                    absent, and taking part sets 1 over it, so a stale 0 cannot win).
                    A key of its own: releases before it read every field of ``chatd:lr:*`` as
                    a conversation id, so a rollback keeps working.
``chatd:rgone:<cid>``  hash: user id -> seq of the event that removed them. A mark that cannot
                    show it was made after that (by a seq the connection was given, or the
                    seq the membership began at) is refused: a `read` in flight while its
                    member is removed never lands after the pointer was forgotten.
``chatd:rdirty``    set of ``cid:uid`` pairs changed since the last flush to Postgres.

Delivery pointers ("received up to seq", docs/protocol.md §4.8) are kept the same way by a second
instance (`DELIVERED`): ``chatd:dr:<cid>``, ``chatd:ld:<uid>``, ``chatd:ddirty``; they share the
user's ``chatd:lm`` (sharing and taking part decide who may see them too), the removal tombstones
and the group push window with the read pointers.
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
from typing import NamedTuple

import redis.asyncio as aioredis

from chatd import keyspace

SENTINEL = "0"
GONE_TTL_S = 86_400  # far longer than any mark is in flight

MOVED, UNCHANGED, LOAD_ROOM, LOAD_USER, REMOVED, ASK_TOOK_PART = 1, 0, -1, -2, -3, -4


class Keys(NamedTuple):
    room: str  # prefix of the sorted set per conversation
    user: str  # prefix of the hash per user
    dirty: str
    flushing: str


# The two instances' key names, without the cluster's hash tag (keyspace.pointers adds it).
READ = Keys("rr:", "lr:", "rdirty", "rflushing")
DELIVERED = Keys("dr:", "ld:", "ddirty", "dflushing")


def flush_lock_key() -> str:
    return keyspace.pointers("rflush-lock")


def flushed_before_key() -> str:
    return keyspace.pointers("rflushed-before")


def room_key(cid: int, keys: Keys = READ) -> str:
    return keyspace.pointers(f"{keys.room}{cid}")


def user_key(uid: int, keys: Keys = READ) -> str:
    return keyspace.pointers(f"{keys.user}{uid}")


def meta_key(uid: int) -> str:
    return keyspace.pointers(f"lm:{uid}")


def gone_key(cid: int) -> str:
    return keyspace.pointers(f"rgone:{cid}")


# A mark, as a Lua function (one script makes many in confirms.py): room, user, dirty, gone,
# meta; uid, cid, seq, evidence, took_part ('1', '0', '' unknown) -> {status, previous, visible}
MARK_FN = """
local function mark(room, user, dirty, gone, meta, uid, cid, seq_arg, evidence, known)
  if redis.call('EXISTS', user) == 0 then return {-2, 0, 0} end
  local share = redis.call('HGET', meta, 'share')
  if not share then return {-2, 0, 0} end
  if tonumber(redis.call('HGET', gone, uid) or '0') > tonumber(evidence) then return {-3, 0, 0} end
  local old = tonumber(redis.call('HGET', user, cid) or '0')
  local seq = tonumber(seq_arg)
  if seq <= old then return {0, old, 0} end
  local took = redis.call('HGET', meta, 'p:' .. cid)
  local visible = 0
  if share == '1' then
    if took == '1' or known == '1' then visible = 1
    elseif took ~= '0' and known == '' then return {-4, old, 0} end
  end
  if visible == 1 and redis.call('EXISTS', room) == 0 then return {-1, 0, 0} end
  if known == '1' then redis.call('HSET', meta, 'p:' .. cid, '1')
  elseif known == '0' then redis.call('HSETNX', meta, 'p:' .. cid, '0') end
  redis.call('HSET', user, cid, seq)
  if visible == 1 then redis.call('ZADD', room, 'GT', seq, uid) end
  redis.call('SADD', dirty, cid .. ':' .. uid)
  return {1, old, visible}
end
"""
_MARK = MARK_FN + "return mark(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], unpack(ARGV))"

# KEYS: room, gone; ARGV: the users' meta key prefix, then seq1, uid1, joined1, seq2, ... from
# Postgres (members who share and took part). GT: never lowers a newer live mark. Postgres may
# be older than Redis: a member removed since (a tombstone newer than the membership read) or
# who stopped sharing since (the user's `share` in chatd:lm, when loaded) is left out.
_LOAD_ROOM = """
redis.call('ZADD', KEYS[1], 'GT', -1, '0')
for i = 2, #ARGV, 3 do
  local uid = ARGV[i + 1]
  local removed = tonumber(redis.call('HGET', KEYS[2], uid) or '0') > tonumber(ARGV[i + 2])
  local private = redis.call('HGET', ARGV[1] .. uid, 'share') == '0'
  if not removed and not private then redis.call('ZADD', KEYS[1], 'GT', ARGV[i], uid) end
end
return 1
"""

# KEYS: user, meta; ARGV: share (1/0), n, cid1, seq1, ..., cidn, seqn, then the cids the user
# took part in. Keeps the larger of the stored and the loaded pointer; a `share` already there
# is newer than Postgres's (a change writes Postgres first) and is kept.
_LOAD_USER = """
local n = tonumber(ARGV[2])
for i = 3, 2 + 2 * n, 2 do
  local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '-1')
  if tonumber(ARGV[i + 1]) > cur then redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
for i = 3 + 2 * n, #ARGV do redis.call('HSET', KEYS[2], 'p:' .. ARGV[i], '1') end
redis.call('HSETNX', KEYS[2], 'share', ARGV[1])
redis.call('HSET', KEYS[1], '_', '1')
return 1
"""

# KEYS: user, meta; ARGV: uid, share (1/0), the rooms' key prefix -> 0, or -2 when the user's
# state must be loaded first. The flag and every room the user's pointers are in, at once (the
# module docstring).
_SET_SHARED = """
if redis.call('EXISTS', KEYS[1]) == 0 or not redis.call('HGET', KEYS[2], 'share') then return -2 end
redis.call('HSET', KEYS[2], 'share', ARGV[2])
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  local cid = fields[i]
  if string.match(cid, '^%d+$') then
    local room = ARGV[3] .. cid
    if ARGV[2] == '0' then
      redis.call('ZREM', room, ARGV[1])
    elseif redis.call('HGET', KEYS[2], 'p:' .. cid) == '1' and redis.call('EXISTS', room) == 1 then
      redis.call('ZADD', room, 'GT', fields[i + 1], ARGV[1])
    end
  end
end
return 0
"""

# KEYS: room, gone, then each removed user's hash and meta; ARGV: cid, seq of the removal, the
# tombstones' lifetime (s), then the users' ids (in the order of their keys)
_FORGET = """
for i = 4, #ARGV do
  redis.call('ZREM', KEYS[1], ARGV[i])
  redis.call('HDEL', KEYS[2 * i - 5], ARGV[1])
  redis.call('HDEL', KEYS[2 * i - 4], 'p:' .. ARGV[1])
  if tonumber(ARGV[2]) > tonumber(redis.call('HGET', KEYS[2], ARGV[i]) or '0') then
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[2])
  end
end
redis.call('EXPIRE', KEYS[2], ARGV[3])
return 1
"""

# KEYS: user, meta, room; ARGV: uid, cid. The user took part in cid: their pointer there may
# show. Nothing to do while the user's state is not loaded (Postgres has the flag).
_TOOK_PART = """
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
redis.call('HSET', KEYS[2], 'p:' .. ARGV[2], '1')
local seq = redis.call('HGET', KEYS[1], ARGV[2])
if seq and redis.call('HGET', KEYS[2], 'share') == '1' and redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('ZADD', KEYS[3], 'GT', seq, ARGV[1])
end
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

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

Loader = Callable[[], Awaitable[Iterable[tuple[int, int]]]]
RoomLoader = Callable[[], Awaitable[Iterable[tuple[int, int, int]]]]
UserLoader = Callable[[], Awaitable[tuple[bool, list[tuple[int, int]], list[int]]]]


class Removed(Exception):
    """The mark could not show it was made by the membership that is current: refused."""


class ReadState:
    def __init__(self, redis: aioredis.Redis, timeout_s: float | None = None, keys: Keys = READ) -> None:
        self.redis = redis
        self.keys = keys
        # Bounds each Redis call of a read mark (a hung Redis answers `unavailable`, it does
        # not hold up the connection's later frames); the Postgres loads are not bounded.
        self._timeout_s = timeout_s
        self._mark = redis.register_script(_MARK)
        self._load_room = redis.register_script(_LOAD_ROOM)
        self._load_user = redis.register_script(_LOAD_USER)
        self._widen = redis.register_script(_WIDEN)
        self._take_range = redis.register_script(_TAKE_RANGE)
        self._release = redis.register_script(_RELEASE)
        self._set_shared = redis.register_script(_SET_SHARED)
        self._forget = redis.register_script(_FORGET)
        self._took_part = redis.register_script(_TOOK_PART)

    async def mark(
        self,
        uid: int,
        cid: int,
        seq: int,
        evidence: int,
        took_part: Callable[[], Awaitable[bool]],
        load_room: RoomLoader,
        load_user: UserLoader,
    ) -> tuple[bool, int, bool]:
        """Move the pointer forward; returns (moved, previous, visible to others).

        `evidence`: a seq this membership is known to have reached (one its connection was
        given, or the one it joined at); a removal after it refuses the mark (`Removed`).
        Whether others see it follows the user's `share` here and whether they took part
        (`took_part` is asked only when Redis does not know). Loads lost state as needed."""
        known = ""
        for _ in range(5):  # load the user, ask Postgres whether they took part, load the room
            async with asyncio.timeout(self._timeout_s):
                status, previous, visible = await self._mark(
                    keys=[
                        room_key(cid, self.keys),
                        user_key(uid, self.keys),
                        keyspace.pointers(self.keys.dirty),
                        gone_key(cid),
                        meta_key(uid),
                    ],
                    args=[uid, cid, seq, evidence, known],
                )
            if status == REMOVED:
                raise Removed
            if status == ASK_TOOK_PART:
                known = "1" if await took_part() else "0"
            elif status == LOAD_ROOM:
                pointers = await load_room()
                async with asyncio.timeout(self._timeout_s):
                    await self.load_room(cid, pointers)
            elif status == LOAD_USER:
                loaded = await load_user()
                async with asyncio.timeout(self._timeout_s):
                    await self.load_user(uid, *loaded)
            else:
                return status == MOVED, int(previous), bool(visible)
        raise RuntimeError("read state could not be loaded")

    async def load_room(self, cid: int, pointers: Iterable[tuple[int, int, int]]) -> None:
        """(user, seq, joined_seq) of the members who share and took part, from Postgres."""
        args: list[int | str] = [keyspace.pointers("lm:")]
        for uid, seq, joined in pointers:
            args += [seq, uid, joined]
        await self._load_room(keys=[room_key(cid, self.keys), gone_key(cid)], args=args)

    async def load_user(
        self, uid: int, share: bool, pointers: Iterable[tuple[int, int]], took_part: Iterable[int]
    ) -> None:
        flat: list[int] = []
        for cid, seq in pointers:
            flat += [cid, seq]
        args = [int(share), len(flat) // 2, *flat, *took_part]
        await self._load_user(keys=[user_key(uid, self.keys), meta_key(uid)], args=args)

    async def room_loaded(self, cid: int) -> bool:
        return bool(await self.redis.exists(room_key(cid, self.keys)))

    async def user_pointers(self, uid: int) -> dict[int, int] | None:
        """The user's pointers, or None when they must be loaded from Postgres first."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(user_key(uid, self.keys))
            pipe.exists(meta_key(uid))
            raw, meta = await pipe.execute()
        if not raw or not meta:
            return None
        return {int(k): int(v) for k, v in raw.items() if _text(k).isdigit()}

    async def counts(self, cid: int, messages: list[tuple[int, int | None]]) -> list[int]:
        """Readers of each (seq, sender) message: pointers >= seq, the sender not counted."""
        key = room_key(cid, self.keys)
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
        members = await self.redis.zrangebyscore(room_key(cid, self.keys), seq, "+inf")
        return sorted(int(_text(m)) for m in members if isinstance(m, bytes | str) and _text(m) != SENTINEL)

    async def forget(self, cid: int, uids: list[int], removed_at: int) -> None:
        """Members removed by the event at seq `removed_at`: they no longer count, their own
        pointer for it goes, and marks of their membership still in flight are refused."""
        users = (k for uid in uids for k in (user_key(uid, self.keys), meta_key(uid)))
        keys = [room_key(cid, self.keys), gone_key(cid), *users]
        await self._forget(keys=keys, args=[cid, removed_at, GONE_TTL_S, *uids])

    async def set_shared(self, uid: int, shared: bool) -> bool:
        """Set the user's sharing and move their pointers out of (or back into) the rooms, in
        one step; False when the user's state must be loaded first. A room not loaded stays so:
        it is rebuilt from Postgres, sentinel and all, on use."""
        status = await self._set_shared(
            keys=[user_key(uid, self.keys), meta_key(uid)],
            args=[uid, int(shared), keyspace.pointers(self.keys.room)],
        )
        return int(status) == 0

    async def took_part(self, uid: int, cid: int) -> None:
        """The user took part in cid (§4.9): their pointer there may show from now on."""
        keys = [user_key(uid, self.keys), meta_key(uid), room_key(cid, self.keys)]
        await self._took_part(keys=keys, args=[uid, cid])

    # -- coalescing group pushes ---------------------------------------------------------
    async def widen(self, cid: int, lo: int, hi: int, window_ms: int) -> bool:
        """Record that seqs lo..hi changed; True if the caller must publish after the window."""
        async with asyncio.timeout(self._timeout_s):
            opened = await self._widen(
                keys=[keyspace.pointers(f"rrange:{cid}"), keyspace.pointers(f"rwindow:{cid}")],
                args=[lo, hi, window_ms],
            )
        return bool(opened)

    async def take_range(self, cid: int) -> tuple[int, int] | None:
        lo, hi = await self._take_range(keys=[keyspace.pointers(f"rrange:{cid}")])
        return None if lo is None else (int(lo), int(hi))

    # -- flushing ------------------------------------------------------------------------
    async def acquire_flush_lock(self, ttl_ms: int) -> str | None:
        token = secrets.token_hex(8)
        ok = await self.redis.set(flush_lock_key(), token, nx=True, px=ttl_ms)
        return token if ok else None

    async def release_flush_lock(self, token: str) -> None:
        await self._release(keys=[flush_lock_key()], args=[token])

    async def take_dirty(self) -> list[tuple[int, int, int]] | None:
        """(cid, uid, seq) to write, None if nothing is dirty. A crashed flusher's batch first."""
        dirty, flushing = keyspace.pointers(self.keys.dirty), keyspace.pointers(self.keys.flushing)
        if not await self.redis.exists(flushing):
            if not await self.redis.exists(dirty):
                return None
            await self.redis.rename(dirty, flushing)
        pairs = [_text(p).split(":") for p in await self.redis.smembers(flushing)]
        async with self.redis.pipeline(transaction=False) as pipe:
            for cid, uid in pairs:
                pipe.hget(user_key(int(uid), self.keys), cid)
            seqs = await pipe.execute()
        return [(int(c), int(u), int(s)) for (c, u), s in zip(pairs, seqs, strict=True) if s is not None]

    async def flushed(self) -> None:
        await self.redis.delete(keyspace.pointers(self.keys.flushing))

    async def mark_flushed_before(self, at: float) -> None:
        await self.redis.set(flushed_before_key(), repr(at))

    async def backlog(self) -> tuple[int, float]:
        """Pointers not yet in Postgres, and an upper bound on the oldest one's age (seconds)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.scard(keyspace.pointers(READ.dirty))
            pipe.scard(keyspace.pointers(READ.flushing))
            pipe.set(flushed_before_key(), repr(time.time()), nx=True, get=True)  # first time: from now
            dirty, flushing, before = await pipe.execute()
        pending = int(dirty) + int(flushing)
        if not pending or before is None:
            return pending, 0.0
        return pending, max(0.0, time.time() - float(_text(before)))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
