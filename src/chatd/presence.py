"""Presence: TTL'd connection entries in Redis, heartbeats, a sweeper, and debounced changes.

Per user ``chatd:pc:<uid>`` is a sorted set of connection id -> expiry (ms, Redis clock). A
worker refreshes its live connections every heartbeat; a clean close leaves the entry for a
grace period instead of removing it, so a reconnect within it (a rolling restart's 1012, a
network blip) changes nothing. Entries of a crashed worker simply expire. One Lua script
applies a change and recomputes online/away/offline atomically, so among any number of
sweepers on any number of hosts exactly one sees a given transition; it gets a version
(strictly increasing per user) and is published once, as ephemeral state (fanout.py), on the
user's own presence channel, whatever the number or size of the user's conversations. Sessions
follow the users whose presence they may see (sessions/following.py): those who took part in a
conversation of at most CHATD_PRESENCE_MAX_GROUP_SIZE members with them; bigger groups get no
presence pushes at all, their members ask (``POST /v1/presence``). Each connection drops
versions it has already seen. When a user takes part in a small conversation, its members are
told the user's status there, and follow the user from then on. A transition whose publish is
lost (Redis failed, the publisher died) is re-published from ``chatd:ppending``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis

from chatd import keyspace, metrics, presence_lua, tasks
from chatd.config import Settings
from chatd.connection import Connection
from chatd.fanout import Hub, conversation_channel, presence_channel
from chatd.storage import Stores
from chatd.tasks import Spawn

log = logging.getLogger("chatd.presence")
STATES = ("online", "away", "offline")
REPUBLISH_AFTER_MS = 3000
MARKER_TTL_S = 60


def _keys(uid: int) -> list[str]:
    shard = keyspace.user_shard(uid)  # "" on one Redis (keyspace.py)
    return [
        keyspace.presence("pc", uid),
        keyspace.presence("pidle", uid),
        keyspace.presence("pgrace", uid),
        keyspace.presence("ps", uid),
        keyspace.presence_shared("pexp", shard),
        keyspace.presence_shared("ppending", shard),
    ]


async def _per_shard(redis: Any, script: Any, groups: list[list[int]], kinds: list[str]) -> list[Any]:
    """`script` once per group of users of one shard, on the keys `kinds` of each user."""
    keys = [[keyspace.presence(kind, uid) for uid in group for kind in kinds] for group in groups]
    return await keyspace.script_calls(redis, script, [(group, []) for group in keys])


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


class Presence:
    def __init__(
        self, redis: aioredis.Redis, stores: Stores, hub: Hub, settings: Settings, spawn: Spawn
    ) -> None:
        self._redis = redis
        self._stores = stores
        self._hub = hub
        self._spawn = spawn
        self._settings = settings
        self._apply = redis.register_script(presence_lua.APPLY)
        self._published = redis.register_script(presence_lua.PUBLISHED)
        self._statuses = redis.register_script(presence_lua.STATUSES)
        self._attention = redis.register_script(presence_lua.ATTENTION)
        self._tasks: list[asyncio.Task[None]] = []
        self._marker = keyspace.worker_marker(secrets.token_hex(8))
        self._marked = False
        # Told when this worker re-registers after a loss it saw (the connection cap waits).
        self.on_data_lost: Callable[[], Awaitable[None]] | None = None

    @property
    def _ttl_ms(self) -> int:
        return int(self._settings.presence_ttl_s * 1000)

    @property
    def _grace_ms(self) -> int:
        return max(int(self._settings.presence_grace_s * 1000), 1)

    def _args(self, uid: int, op: str, conn_id: str, duration_ms: int) -> list[Any]:
        return [uid, op, conn_id, duration_ms, self._grace_ms, self._ttl_ms]

    async def change(self, uid: int, op: str, conn_id: str = "", duration_ms: int = 0) -> None:
        result = await self._apply(keys=_keys(uid), args=self._args(uid, op, conn_id, duration_ms))
        await self._after(uid, result)

    async def _after(self, uid: int, result: list[Any]) -> None:
        changed, state, version, last_alive_ms = result
        if changed:
            metrics.PRESENCE_TRANSITIONS.labels(_text(state) or "offline").inc()
            await self._announce(uid, _text(state) or "offline", int(version), int(last_alive_ms))

    async def connect(self, conn: Connection) -> None:
        await self.change(conn.user_id, "connect", conn.id, self._ttl_ms)

    async def disconnect(self, conn: Connection) -> None:
        with contextlib.suppress(Exception):  # if Redis is away, the entry expires by itself
            await self.change(conn.user_id, "disconnect", conn.id, self._grace_ms)

    async def set_idle(self, conn: Connection, idle: bool) -> None:
        """Bounded like the send path: a hung Redis answers `unavailable` rather than holding
        up the connection's later frames. A transition applied but not yet published when the
        bound cuts it off stays in the pending set, and the sweeper publishes it."""
        async with asyncio.timeout(self._settings.redis_send_timeout_s):
            await self.change(conn.user_id, "idle" if idle else "active", conn.id)

    async def _announce(self, uid: int, state: str, version: int, last_alive_ms: int = 0) -> None:
        """One publish per change, on the user's own channel: the sessions following the user
        subscribe to it (the cost of a change never depends on the user's conversations)."""
        last_seen = None
        if state == "offline":
            seen = datetime.fromtimestamp(last_alive_ms / 1000, UTC) if last_alive_ms else datetime.now(UTC)
            await self._stores.presence.seen(uid, seen)
            last_seen = seen
        event = {
            "type": "presence",
            "user_id": uid,
            "status": state,
            "version": version,
            "last_seen": last_seen,
        }
        sent = self._hub.ephemeral([presence_channel(uid)], event, key=("presence", uid))
        sent.add_done_callback(functools.partial(self._sent, uid, version))

    async def took_part(self, cid: int, uid: int) -> None:
        """`uid` took part in `cid` (after the COMMIT): if the conversation is small, tell its
        members `uid`'s status there; their sessions follow `uid` from then on (§4.9)."""
        small, last_seen = await self._stores.presence.small_member(
            cid, uid, self._settings.presence_max_group_size
        )
        if small:
            [event] = await self.view({uid: last_seen})
            self._hub.ephemeral([conversation_channel(cid)], {"type": "presence", **event})

    def _sent(self, uid: int, version: int, sent: asyncio.Future[bool]) -> None:
        """Published: the transition leaves the pending set. If not, the sweeper re-publishes
        it after REPUBLISH_AFTER_MS (a worker that dies before this point is covered too)."""
        if not sent.cancelled() and sent.result():
            self._spawn(self._mark_published(uid, version))

    async def _mark_published(self, uid: int, version: int) -> None:
        try:
            pending = keyspace.presence_shared("ppending", keyspace.user_shard(uid))
            await self._published(keys=[pending, keyspace.presence("ps", uid)], args=[uid, version])
        except Exception:
            log.info("presence publish not recorded; the sweeper re-publishes it", extra={"user_id": uid})

    async def connected_users(self) -> int:
        """Users with a live (or grace-period) connection on any worker: online or away."""
        shards = keyspace.user_shards()
        async with self._redis.pipeline(transaction=False) as pipe:
            for shard in shards:
                pipe.zcard(keyspace.presence_shared("pexp", shard))
            return sum(int(count) for count in await pipe.execute())

    async def statuses(self, uids: list[int]) -> dict[int, tuple[str, int]]:
        if not uids:
            return {}
        groups = keyspace.by_user_shard(uids)
        replies = await _per_shard(self._redis, self._statuses, groups, ["ps"])
        found = {}
        for group, flat in zip(groups, replies, strict=True):
            for i, uid in enumerate(group):
                found[uid] = (_text(flat[2 * i]) or "offline", int(flat[2 * i + 1] or 0))
        return found

    async def unattended(self, uids: list[int], away_for_s: float) -> set[int]:
        """Those of `uids` no device is looking at: no live connection, or all of them idle
        (away) for at least `away_for_s` (Web Push goes to them, pushes.py)."""
        if not uids:
            return set()
        groups = keyspace.by_user_shard(uids)
        replies = await _per_shard(self._redis, self._attention, groups, ["pc", "pidle", "pgrace", "ps"])
        found = set()
        for group, reply in zip(groups, replies, strict=True):
            flat = [int(v) for v in reply]
            now = flat[-1]
            for i, uid in enumerate(group):
                active, idle, since = flat[3 * i : 3 * i + 3]
                if active == 0 and (idle == 0 or now - since >= away_for_s * 1000):
                    found.add(uid)
        return found

    async def view(self, users: dict[int, datetime | None]) -> list[dict[str, Any]]:
        statuses = await self.statuses(list(users))
        return [
            {
                "user_id": uid,
                "status": statuses[uid][0],
                "version": statuses[uid][1],
                "last_seen": users[uid] if statuses[uid][0] == "offline" else None,
            }
            for uid in users
        ]

    async def query(self, uid: int, wanted: list[int]) -> tuple[list[dict[str, Any]], list[int]]:
        """`POST /v1/presence`: the presence of those of `wanted` whom `uid` may see (ascending),
        and the ids of the others."""
        visible = await self._stores.presence.visible(uid, wanted)
        found = sorted(await self.view(visible), key=lambda entry: int(entry["user_id"]))
        return found, [u for u in wanted if u not in visible]

    async def followed(self, uid: int) -> dict[int, datetime | None]:
        """Everyone whose changes `uid` is pushed (up to CHATD_PRESENCE_SNAPSHOT_MAX, the lowest
        ids), with when they were last seen: co-members of conversations of at most
        CHATD_PRESENCE_MAX_GROUP_SIZE members who took part in them."""
        if self._settings.presence_snapshot_max == 0:
            return {}
        found = await self._stores.presence.co_members(
            uid, self._settings.presence_snapshot_max, self._settings.presence_max_group_size
        )
        return dict(found)

    async def joined(self, cid: int, uid: int) -> dict[int, datetime | None]:
        """Whose changes `uid` may be pushed through `cid`, which it just joined."""
        found = await self._stores.presence.took_part_members(
            cid, uid, self._settings.presence_max_group_size
        )
        return dict(found)

    # -- background loops ----------------------------------------------------------------
    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._every(self._settings.presence_heartbeat_s, self.heartbeat)),
            asyncio.create_task(self._every(self._settings.presence_sweep_s, self.sweep)),
        ]

    async def stop(self) -> None:
        await tasks.cancel(*self._tasks)

    async def _every(self, period: float, work: Callable[[], Awaitable[None]]) -> None:
        while True:
            await asyncio.sleep(period)
            try:
                await work()
            except Exception:
                metrics.ERRORS.labels("presence").inc()
                log.warning("presence %s failed", work.__name__, exc_info=True)

    async def heartbeat(self) -> None:
        """Refresh every live local connection's entry (the WebSocket pings prove them alive)."""
        conns = [c for c in self._hub.connections if c.close_code is None]
        if not conns:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for conn in conns:
                args = self._args(conn.user_id, "refresh", conn.id, self._ttl_ms)
                await keyspace.queue_script(pipe, self._apply, _keys(conn.user_id), args)
            results = await pipe.execute()
        for conn, result in zip(conns, results, strict=True):
            await self._after(conn.user_id, result)  # e.g. Redis lost its data: back online

    async def _marker_missing(self) -> bool:
        """Whether this worker's marker key is gone (FLUSHALL, a restart without persistence).

        Each worker keeps a key of its own, refreshed every sweep. It is missing on the first
        sweep too: the data may have been lost before it, and re-registering once is cheap.
        """
        ttl_ms = int(max(MARKER_TTL_S, 10 * self._settings.presence_sweep_s) * 1000)
        previous = await self._redis.set(self._marker, b"1", px=ttl_ms, get=True)
        return previous is None

    async def sweep(self) -> None:
        """Turn users whose every entry expired offline; re-publish orphaned transitions.

        If Redis lost its data, re-register every local connection first (a heartbeat), so
        presence queries see connected users online again within a sweep, not a heartbeat.
        """
        if await self._marker_missing():
            if self._marked:
                log.warning("redis lost presence data; re-registering local connections")
                if self.on_data_lost is not None:
                    await self.on_data_lost()
            self._marked = True
            await self.heartbeat()
        now_ms = int(time.time() * 1000)
        due = await self._due("pexp", now_ms, 500)
        for raw in due:
            await self.change(int(_text(raw) or 0), "sweep")
        metrics.SWEEPER_REMOVALS.inc(len(due))
        stale = await self._due("ppending", now_ms - REPUBLISH_AFTER_MS, 100)
        for raw in stale:
            uid = int(_text(raw) or 0)
            state, version = (await self.statuses([uid]))[uid]
            await self._announce(uid, state, version)

    async def _due(self, kind: str, until_ms: int, most: int) -> list[Any]:
        """Users scored up to `until_ms` in every shard's `kind` set (at most `most` a shard)."""
        shards = keyspace.user_shards()
        async with self._redis.pipeline(transaction=False) as pipe:
            for shard in shards:
                pipe.zrangebyscore(keyspace.presence_shared(kind, shard), "-inf", until_ms, start=0, num=most)
            return [user for found in await pipe.execute() for user in found]
