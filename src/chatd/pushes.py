"""Web Push for members no device is looking at, off the send path.

``committed`` is called by messaging.py after a send group's COMMIT and publish, for the
messages it stored (not for a resend answered from the stored message). It never waits and
never fails: each message goes into a bounded intake (one entry per conversation and sender;
later messages of the same pair fold into the one waiting), which one task works through:

1. the members who may be pushed (storage/notify.py ``targets``, one query for all that waits:
   not the sender, not muted, not in do-not-disturb, with at least one subscription);
2. of those, the ones no device is looking at (presence.py ``unattended``: no live connection,
   or all idle for CHATD_PUSH_AWAY_DELAY_S);
3. a claim in Redis per (user, conversation), ``chatd:pushed:<uid>:<cid>`` = the highest seq
   handled and when the last push went: a message at or below that seq is never pushed again
   (another worker, a restart), and at most one push per CHATD_PUSH_INTERVAL_S per
   conversation goes to a user (the first message of a burst; the rest are counted);
4. one request per subscription into a bounded queue (CHATD_PUSH_QUEUE requests held at most,
   queued, in flight or waiting for a retry; past it they are dropped and counted), sent by
   CHATD_PUSH_CONCURRENCY tasks, each request bounded by CHATD_PUSH_TIMEOUT_S and retried
   after 1, 5 and 25 s (or the service's Retry-After) on 429, 5xx or a network error.

At most once: the claim is taken before the request, so a worker that dies after claiming and
before sending loses that push (and whatever it held in memory); nothing is ever sent twice
for one message. A push is a hint, never the message: the message is in Postgres either way.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import redis.asyncio as aioredis

from chatd import keyspace, metrics, tasks, webpush
from chatd.config import Settings
from chatd.presence import Presence
from chatd.storage import Stores, is_unavailable
from chatd.storage.notify import Target
from chatd.storage.records import Event, Kind

log = logging.getLogger("chatd.pushes")
PREVIEW_CHARS = 200  # a payload stays far below the 4 KB a push service takes
BACKOFF_S = (1.0, 5.0, 25.0)  # then the request is given up
RETRY_AFTER_MAX_S = 300.0
MARK_TTL_MIN_S = 3600  # how long a claim outlives its interval (a late resend is still seen)
INTAKE_BATCH = 256  # messages whose targets one query finds

# KEYS: chatd:pushed:<uid>:<cid> per user; ARGV: seq, interval_ms, ttl_ms.
# Per user: 1 claimed (push now), 0 already handled (this seq or a later one), 2 within the interval.
_CLAIM = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local seq, interval, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {}
for i, key in ipairs(KEYS) do
  local v = redis.call('HMGET', key, 'seq', 'at')
  local done, at = tonumber(v[1] or '0'), tonumber(v[2] or '0')
  if seq <= done then
    out[i] = 0
  elseif at > 0 and now - at < interval then
    redis.call('HSET', key, 'seq', seq)
    redis.call('PEXPIRE', key, ttl)
    out[i] = 2
  else
    redis.call('HSET', key, 'seq', seq, 'at', now)
    redis.call('PEXPIRE', key, ttl)
    out[i] = 1
  end
end
return out
"""


def mark_key(uid: int, cid: int) -> str:
    return keyspace.push_claim(uid, cid)


@dataclass(slots=True)
class Job:
    target: Target
    payload: bytes
    topic: str
    attempt: int = 0


def payload(event: Event, names: tuple[str, str, str | None], preview: bool) -> bytes:
    """What the service worker shows (docs/protocol.md "Web Push"): without the preview only
    who wrote, and where to open."""
    sender, kind, title = names
    found: dict[str, Any] = {
        "type": "message",
        "conversation_id": event.conversation_id,
        "seq": event.seq,
        "kind": kind,
        "sender": sender,
    }
    if preview:
        found["body"] = event.body[:PREVIEW_CHARS]
        if kind == "group":
            found["title"] = title
    return orjson.dumps(found)


class Pushes:
    def __init__(
        self,
        stores: Stores,
        presence: Presence,
        redis: aioredis.Redis,
        settings: Settings,
        key: webpush.VapidKey | None,
    ) -> None:
        self._stores = stores
        self._presence = presence
        self._settings = settings
        self._key = key
        self._claim = redis.register_script(_CLAIM)
        self._intake: OrderedDict[tuple[int, int], Event] = OrderedDict()
        self._wake = asyncio.Event()
        self._queue: asyncio.Queue[Job] = asyncio.Queue()
        self._held = 0
        self._timers: set[asyncio.TimerHandle] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._client: httpx.AsyncClient | None = None

    @property
    def enabled(self) -> bool:
        return self._key is not None

    # -- the seam on the send path -------------------------------------------------------
    def committed(self, events: Sequence[Event]) -> None:
        if self._key is None:
            return
        for event in events:
            if event.kind is not Kind.TEXT or event.sender_id is None:
                continue
            pair = (event.conversation_id, event.sender_id)
            if pair in self._intake:
                metrics.PUSH_SKIPPED.labels("coalesced").inc()
            elif len(self._intake) >= self._settings.push_queue:
                metrics.PUSHES.labels("dropped").inc()
            else:
                self._intake[pair] = event
        self._wake.set()

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        if self._key is None:
            return
        concurrency = self._settings.push_concurrency
        self._client = httpx.AsyncClient(
            timeout=self._settings.push_timeout_s,
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
            follow_redirects=False,
        )
        self._tasks = [asyncio.create_task(self._intake_loop())]
        self._tasks += [asyncio.create_task(self._sender()) for _ in range(concurrency)]

    async def stop(self) -> None:
        for timer in self._timers:
            timer.cancel()
        await tasks.cancel(*self._tasks)
        if self._client is not None:
            await self._client.aclose()

    # -- deciding ------------------------------------------------------------------------
    async def _intake_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._intake:
                # What waits is taken together: one query finds every message's targets.
                size = min(len(self._intake), INTAKE_BATCH)
                batch = [self._intake.popitem(last=False) for _ in range(size)]
                try:
                    found = await self._stores.notify.targets([pair for pair, _ in batch])
                except Exception as exc:
                    self._not_considered(exc, batch[0][1], len(batch))
                    continue
                for pair, event in batch:
                    try:
                        await self._consider(event, pair[1], found.get(pair, []))
                    except Exception as exc:
                        self._not_considered(exc, event, 1)

    def _not_considered(self, exc: Exception, event: Event, count: int) -> None:
        metrics.PUSH_SKIPPED.labels("unavailable").inc(count)
        if not is_unavailable(exc):
            metrics.ERRORS.labels("push").inc()
        log.warning(
            "push not considered",
            extra={"conversation_id": event.conversation_id, "messages": count},
            exc_info=None if is_unavailable(exc) else exc,
        )

    async def _consider(self, event: Event, sender: int, targets: list[Target]) -> None:
        cid, seq = event.conversation_id, event.seq
        if not targets:
            return
        users = sorted({t.user_id for t in targets})
        away = await self._presence.unattended(users, self._settings.push_away_delay_s)
        metrics.PUSH_SKIPPED.labels("attended").inc(len(users) - len(away))
        users = [uid for uid in users if uid in away]
        if not users:
            return
        interval_ms = int(self._settings.push_interval_s * 1000)
        ttl_ms = max(interval_ms, MARK_TTL_MIN_S * 1000)
        keys = [mark_key(uid, cid) for uid in users]
        answers = await self._claim(keys=keys, args=[seq, interval_ms, ttl_ms])
        claimed = {uid for uid, answer in zip(users, answers, strict=True) if int(answer) == 1}
        metrics.PUSH_SKIPPED.labels("interval").inc(sum(1 for a in answers if int(a) == 2))
        metrics.PUSH_SKIPPED.labels("handled").inc(sum(1 for a in answers if int(a) == 0))
        if not claimed:
            return
        names = await self._stores.notify.names(cid, sender)
        if names is None:
            return
        assert self._key is not None
        topic = self._key.topic(f"c{cid}")
        bodies = {preview: payload(event, names, preview) for preview in (False, True)}
        for target in targets:
            if target.user_id in claimed:
                self._put(Job(target, bodies[target.preview], topic))

    # -- sending -------------------------------------------------------------------------
    def _put(self, job: Job) -> None:
        if self._held >= self._settings.push_queue:
            metrics.PUSHES.labels("dropped").inc()
            return
        self._held += 1
        metrics.PUSH_HELD.set(self._held)
        self._queue.put_nowait(job)

    def _release(self, outcome: str) -> None:
        self._held -= 1
        metrics.PUSH_HELD.set(self._held)
        metrics.PUSHES.labels(outcome).inc()

    async def _sender(self) -> None:
        while True:
            job = await self._queue.get()
            try:
                await self._send(job)
            except Exception:
                metrics.ERRORS.labels("push").inc()
                log.exception("push failed")
                self._release("failed")

    async def _send(self, job: Job) -> None:
        assert self._client is not None
        assert self._key is not None
        target = job.target
        if not webpush.allowed(target.endpoint, self._settings.push_services):
            self._release("refused")  # the allowed services changed since it subscribed
            return
        body = webpush.encrypt(job.payload, target.p256dh, target.auth)
        try:
            async with asyncio.timeout(self._settings.push_timeout_s + 1):
                answer = await webpush.send(
                    self._client,
                    self._key,
                    target.endpoint,
                    body,
                    ttl_s=self._settings.push_ttl_s,
                    topic=job.topic,
                    urgency="high",
                )
        except TimeoutError:
            answer = webpush.Answer(webpush.Outcome.RETRY)
        if answer.outcome is webpush.Outcome.SENT:
            self._release("sent")
        elif answer.outcome is webpush.Outcome.GONE:
            self._release("gone")
            try:
                await self._stores.notify.gone(target.id, target.endpoint)
            except Exception as exc:
                log.warning("gone subscription not removed", exc_info=None if is_unavailable(exc) else exc)
        elif answer.outcome is webpush.Outcome.REFUSED:
            log.warning("push refused", extra={"status": answer.status, "user_id": target.user_id})
            self._release("refused")
        elif job.attempt >= len(BACKOFF_S):
            self._release("gave_up")
        else:
            delay = BACKOFF_S[job.attempt] * random.uniform(0.8, 1.2)
            if answer.retry_after_s is not None:
                delay = min(max(delay, answer.retry_after_s), RETRY_AFTER_MAX_S)
            job.attempt += 1
            metrics.PUSH_RETRIES.inc()
            self._later(delay, job)

    def _later(self, delay: float, job: Job) -> None:
        """Retry after `delay`; the job stays held (counted against the cap) meanwhile."""
        loop = asyncio.get_running_loop()

        def again() -> None:
            self._timers.discard(handle)
            self._queue.put_nowait(job)

        handle = loop.call_later(delay, again)
        self._timers.add(handle)
