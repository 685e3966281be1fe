"""Read pointers' hot state in Redis. Every operation here is O(log members) or better, except
a sharing change, which goes over the user's own conversations once (once per shard on a
cluster, below).

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

On a Redis Cluster every key a mark touches carries its conversation's shard tag
(keyspace.conv_shard, ``{c:<cid % 256>}``), so the pointers spread over every primary: the
room ``chatd:{c:N}rr:<cid>``, the tombstones, the group push window, the shard's own dirty and
flushing sets (``chatd:{c:N}rdirty``), and the user's hashes *of that shard*
(``chatd:{c:N}lr:<uid>``, ``chatd:{c:N}lm:<uid>``: the pointers and `p:` flags of the user's
conversations in shard N, the sentinel and a copy of `share`). Each shard's user hashes are
loaded on their own, when a mark or a query needs them. What is lost against one Redis: a
sharing change is one script per shard (in one pipeline), no longer one step for all the
user's conversations: a mark in another shard may, for a moment, still follow the old setting
while some shard already has the new one. Each shard is still atomic (a mark there is before
the change and moved by it, or after it and follows it), and the change is acknowledged only
once every shard has it, as before; a pointer shown a moment longer, in a conversation the
change had not reached yet, is what a mark just before the change does too. On one Redis there
is one shard, "", and every name (and step) is as it was.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import NamedTuple

import redis.asyncio as aioredis

from chatd import keyspace, readstate_lua

SENTINEL = "0"
GONE_TTL_S = 86_400  # far longer than any mark is in flight

MOVED, UNCHANGED, LOAD_ROOM, LOAD_USER, REMOVED, ASK_TOOK_PART = 1, 0, -1, -2, -3, -4
MARK_FN = readstate_lua.MARK_FN


class Keys(NamedTuple):
    room: str  # prefix of the sorted set per conversation
    user: str  # prefix of the hash per user (per user and conversation shard on a cluster)
    dirty: str
    flushing: str


# The two instances' key names, without the cluster's hash tag (keyspace.shard_pointers adds it).
READ = Keys("rr:", "lr:", "rdirty", "rflushing")
DELIVERED = Keys("dr:", "ld:", "ddirty", "dflushing")


def flush_lock_key() -> str:
    return keyspace.pointers("rflush-lock")


def flushed_before_key() -> str:
    return keyspace.pointers("rflushed-before")


def _in(cid: int, name: str) -> str:
    return keyspace.shard_pointers(keyspace.conv_shard(cid), name)


def room_key(cid: int, keys: Keys = READ) -> str:
    return _in(cid, f"{keys.room}{cid}")


def user_key(uid: int, cid: int, keys: Keys = READ) -> str:
    """The user's pointer hash holding cid (of cid's shard on a cluster)."""
    return _in(cid, f"{keys.user}{uid}")


def meta_key(uid: int, cid: int) -> str:
    return _in(cid, f"lm:{uid}")


def gone_key(cid: int) -> str:
    return _in(cid, f"rgone:{cid}")


def dirty_key(cid: int, keys: Keys = READ) -> str:
    return _in(cid, keys.dirty)


Loader = Callable[[], Awaitable[Iterable[tuple[int, int]]]]
RoomLoader = Callable[[], Awaitable[Iterable[tuple[int, int, int]]]]
UserState = tuple[bool, list[tuple[int, int]], list[int]]
UserLoader = Callable[[], Awaitable[UserState]]


class Removed(Exception):
    """The mark could not show it was made by the membership that is current: refused."""


class ReadState:
    def __init__(self, redis: aioredis.Redis, timeout_s: float | None = None, keys: Keys = READ) -> None:
        self.redis = redis
        self.keys = keys
        # Bounds each Redis call of a read mark (a hung Redis answers `unavailable`, it does
        # not hold up the connection's later frames); the Postgres loads are not bounded.
        self._timeout_s = timeout_s
        self._mark = redis.register_script(readstate_lua.MARK)
        self._load_room = redis.register_script(readstate_lua.LOAD_ROOM)
        self._load_user = redis.register_script(readstate_lua.LOAD_USER)
        self._widen = redis.register_script(readstate_lua.WIDEN)
        self._take_range = redis.register_script(readstate_lua.TAKE_RANGE)
        self._release = redis.register_script(readstate_lua.RELEASE)
        self._set_shared = redis.register_script(readstate_lua.SET_SHARED)
        self._forget = redis.register_script(readstate_lua.FORGET)
        self._took_part = redis.register_script(readstate_lua.TOOK_PART)
        self._taken: list[str] = []  # the flushing sets take_dirty read

    def _user(self, shard: str, uid: int) -> str:
        return keyspace.shard_pointers(shard, f"{self.keys.user}{uid}")

    @staticmethod
    def _meta(shard: str, uid: int) -> str:
        return keyspace.shard_pointers(shard, f"lm:{uid}")

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
                        user_key(uid, cid, self.keys),
                        dirty_key(cid, self.keys),
                        gone_key(cid),
                        meta_key(uid, cid),
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
                    await self.load_user(uid, *loaded, cids=[cid])
            else:
                return status == MOVED, int(previous), bool(visible)
        raise RuntimeError("read state could not be loaded")

    async def load_room(self, cid: int, pointers: Iterable[tuple[int, int, int]]) -> None:
        """(user, seq, joined_seq) of the members who share and took part, from Postgres."""
        args: list[int | str] = [_in(cid, "lm:")]
        for uid, seq, joined in pointers:
            args += [seq, uid, joined]
        await self._load_room(keys=[room_key(cid, self.keys), gone_key(cid)], args=args)

    async def load_user(
        self,
        uid: int,
        share: bool,
        pointers: Iterable[tuple[int, int]],
        took_part: Iterable[int],
        cids: Iterable[int] = (),
        shards: Iterable[str] | None = None,
    ) -> None:
        """The user's state from Postgres, into every shard it has a pointer or flag in, the
        shards of `cids` (a shard is loaded even when the user has nothing there yet), or
        only `shards` when given. One Redis: the one shard, as ever."""
        flat: dict[str, list[int]] = {}
        took: dict[str, list[int]] = {}
        for cid, seq in pointers:
            flat.setdefault(keyspace.conv_shard(cid), []).extend([cid, seq])
        for cid in took_part:
            took.setdefault(keyspace.conv_shard(cid), []).append(cid)
        wanted = set(shards) if shards is not None else {*flat, *took, *map(keyspace.conv_shard, cids)}
        if not keyspace.cluster():
            wanted = {""}
        calls: list[tuple[list[str], list[int]]] = []
        for shard in sorted(wanted):
            pairs = flat.get(shard, [])
            args = [int(share), len(pairs) // 2, *pairs, *took.get(shard, [])]
            calls.append(([self._user(shard, uid), self._meta(shard, uid)], args))
        if calls:
            await keyspace.script_calls(self.redis, self._load_user, calls)

    async def room_loaded(self, cid: int) -> bool:
        return bool(await self.redis.exists(room_key(cid, self.keys)))

    async def user_pointers(self, uid: int, cids: Iterable[int] = ()) -> dict[int, int] | None:
        """The user's pointers (on a cluster: those in the shards of `cids`, the user's
        conversations), or None when they must be loaded from Postgres first."""
        shards = sorted({keyspace.conv_shard(cid) for cid in cids}) if keyspace.cluster() else [""]
        async with self.redis.pipeline(transaction=False) as pipe:
            for shard in shards:
                pipe.hgetall(self._user(shard, uid))
                pipe.exists(self._meta(shard, uid))
            replies = await pipe.execute() if shards else []
        found: dict[int, int] = {}
        for raw, meta in zip(replies[::2], replies[1::2], strict=True):
            if not raw or not meta:
                return None
            found.update({int(k): int(v) for k, v in raw.items() if _text(k).isdigit()})
        return found

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
        users = (k for uid in uids for k in (user_key(uid, cid, self.keys), meta_key(uid, cid)))
        keys = [room_key(cid, self.keys), gone_key(cid), *users]
        await self._forget(keys=keys, args=[cid, removed_at, GONE_TTL_S, *uids])

    async def set_shared(self, uid: int, shared: bool, load: UserLoader) -> None:
        """Set the user's sharing and move their pointers out of (or back into) the rooms, one
        step per shard (every shard on a cluster, in one pipeline; the module docstring says
        what that gives up); a shard whose state must be loaded first is loaded (`load`: the
        user's state in Postgres, read after the change was written there) and done again.
        A room not loaded stays so: it is rebuilt from Postgres, sentinel and all, on use."""
        state = await load() if keyspace.cluster() else None
        has = None if state is None else {keyspace.conv_shard(c) for c in [c for c, _ in state[1]] + state[2]}
        shards = keyspace.conv_shards()
        for _ in range(5):
            calls: list[tuple[list[str], list[int | str]]] = []
            for shard in shards:
                keys = [self._user(shard, uid), self._meta(shard, uid)]
                room = keyspace.shard_pointers(shard, self.keys.room)
                calls.append((keys, [uid, int(shared), room, int(has is None or shard in has), GONE_TTL_S]))
            replies = await keyspace.script_calls(self.redis, self._set_shared, calls)
            shards = [shard for shard, status in zip(shards, replies, strict=True) if int(status) != 0]
            if not shards:
                return
            await self.load_user(uid, *(state or await load()), shards=shards)
        raise RuntimeError("read state could not be loaded")

    async def took_part(self, uid: int, cid: int) -> None:
        """The user took part in cid (§4.9): their pointer there may show from now on."""
        keys = [user_key(uid, cid, self.keys), meta_key(uid, cid), room_key(cid, self.keys)]
        await self._took_part(keys=keys, args=[uid, cid])

    # -- coalescing group pushes ---------------------------------------------------------
    async def widen(self, cid: int, lo: int, hi: int, window_ms: int) -> bool:
        """Record that seqs lo..hi changed; True if the caller must publish after the window."""
        async with asyncio.timeout(self._timeout_s):
            opened = await self._widen(
                keys=[_in(cid, f"rrange:{cid}"), _in(cid, f"rwindow:{cid}")],
                args=[lo, hi, window_ms],
            )
        return bool(opened)

    async def take_range(self, cid: int) -> tuple[int, int] | None:
        lo, hi = await self._take_range(keys=[_in(cid, f"rrange:{cid}")])
        return None if lo is None else (int(lo), int(hi))

    # -- flushing ------------------------------------------------------------------------
    async def acquire_flush_lock(self, ttl_ms: int) -> str | None:
        token = secrets.token_hex(8)
        ok = await self.redis.set(flush_lock_key(), token, nx=True, px=ttl_ms)
        return token if ok else None

    async def release_flush_lock(self, token: str) -> None:
        await self._release(keys=[flush_lock_key()], args=[token])

    async def take_dirty(self) -> list[tuple[int, int, int]] | None:
        """(cid, uid, seq) to write, None if nothing is dirty: of every shard, its crashed
        flusher's batch (the flushing set) if there is one, else its dirty set, renamed."""
        shards = keyspace.conv_shards()
        names = [
            (keyspace.shard_pointers(s, self.keys.dirty), keyspace.shard_pointers(s, self.keys.flushing))
            for s in shards
        ]
        async with self.redis.pipeline(transaction=False) as pipe:
            for dirty, flushing in names:
                pipe.exists(flushing)
                pipe.exists(dirty)
            found = await pipe.execute()
        taken: list[tuple[str, str]] = []
        for index, (shard, (dirty, flushing)) in enumerate(zip(shards, names, strict=True)):
            if found[2 * index]:
                taken.append((shard, flushing))
            elif found[2 * index + 1]:
                await self.redis.rename(dirty, flushing)
                taken.append((shard, flushing))
        self._taken = [flushing for _, flushing in taken]
        if not taken:
            return None
        async with self.redis.pipeline(transaction=False) as pipe:
            for _, flushing in taken:
                pipe.smembers(flushing)
            members = await pipe.execute()
        pairs = [
            (shard, *_text(p).split(":"))
            for (shard, _), batch in zip(taken, members, strict=True)
            for p in batch
        ]
        async with self.redis.pipeline(transaction=False) as pipe:
            for shard, cid, uid in pairs:
                pipe.hget(self._user(shard, int(uid)), cid)
            seqs = await pipe.execute()
        return [(int(c), int(u), int(s)) for (_, c, u), s in zip(pairs, seqs, strict=True) if s is not None]

    async def flushed(self) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for flushing in self._taken:
                pipe.delete(flushing)
            await pipe.execute()
        self._taken = []

    async def mark_flushed_before(self, at: float) -> None:
        await self.redis.set(flushed_before_key(), repr(at))

    async def backlog(self) -> tuple[int, float]:
        """Pointers not yet in Postgres (every shard's), and an upper bound on the oldest one's
        age (seconds)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for shard in keyspace.conv_shards():
                pipe.scard(keyspace.shard_pointers(shard, READ.dirty))
                pipe.scard(keyspace.shard_pointers(shard, READ.flushing))
            pipe.set(flushed_before_key(), repr(time.time()), nx=True, get=True)  # first time: from now
            *sizes, before = await pipe.execute()
        pending = sum(int(n) for n in sizes)
        if not pending or before is None:
            return pending, 0.0
        return pending, max(0.0, time.time() - float(_text(before)))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
