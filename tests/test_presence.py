"""Presence: online, away, offline on close and on crash, no flapping, only for co-members.

The test stack runs with TTL 3 s, heartbeat 1 s, sweep 0.5 s and grace 2 s (conftest.py).
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from tests.conftest import Worker
from tests.helpers import Api, Frame, User, Ws, ws_url

TTL, SWEEP, GRACE = 3.0, 0.5, 2.0


# Each test runs against one Redis and against a Redis Cluster (conftest.py).
pytestmark = pytest.mark.both_redis


# A client in a process of its own: authenticates, says so, then only answers pings (the
# library does that in a background thread) until it is stopped.
STILL_CLIENT = """
import json, sys, time
from websockets.sync.client import connect
ws = connect(sys.argv[1])
ws.send(json.dumps({"type": "auth", "token": sys.argv[2]}))
while json.loads(ws.recv())["type"] != "synced":
    pass
print("synced", flush=True)
time.sleep(3600)
"""


def about(uid: int, status: str | None = None) -> Callable[[Frame], bool]:
    return lambda f: f["type"] == "presence" and f["user_id"] == uid and status in (None, f["status"])


def events(ws: Ws, uid: int) -> list[str]:
    return [f["status"] for f in ws.frames if about(uid)(f)]


async def sentinel_offline(api: Api, observer: User, o: Ws, url: str) -> None:
    """Barrier: a sentinel user the observer sees connects on `url`, then closes. Its offline
    reaches `o` after every event published before the close, and after every sweep that ran
    before its grace period ran out (sweeps take expired users in deadline order)."""
    sentinel = await api.user()
    await api.direct(sentinel, observer)  # the opener took part: the observer sees them (§4.9)
    ws = await Ws.connect(url, sentinel.token)
    await o.expect(about(sentinel.id, "online"))
    await ws.close()
    await o.expect(about(sentinel.id, "offline"), timeout=GRACE + 2 * SWEEP + 5)


async def watched(api: Api, observer_url: str, *device_urls: str) -> tuple[User, User, Ws, list[Ws]]:
    """A user with a device on each of `device_urls`, seen online by an observer who shares a
    direct conversation with them."""
    user, observer = await api.user(), await api.user()
    await api.direct(user, observer)
    o = await Ws.connect(observer_url, observer.token)
    devices = [await Ws.connect(url, user.token) for url in device_urls]
    await o.expect(about(user.id, "online"))
    return user, observer, o, devices


async def test_online_on_connect_then_snapshot_for_later_observers(w1: Api, w2: Api) -> None:
    user, observer, later = await w1.user(), await w1.user(), await w1.user()
    cid = await w1.group(user, [observer, later])
    o = await Ws.connect(w2.base_url, observer.token)
    assert (await o.send(cid, "here"))["type"] == "ack"  # took part: others may see them (§4.9)
    u = await Ws.connect(w1.base_url, user.token)
    await o.expect(about(user.id, "online"))
    late = await Ws.connect(w1.base_url, later.token)
    snapshot = {p["user_id"]: p for p in late.ready["presence"]}
    assert snapshot[user.id]["status"] == "online" and snapshot[observer.id]["status"] == "online"
    for ws in (o, u, late):
        await ws.close()


async def test_offline_on_clean_close_of_the_last_device_only(w1: Api, w2: Api) -> None:
    user, observer, o, (phone, laptop) = await watched(w1, w2.base_url, w1.base_url, w2.base_url)
    await phone.close()
    await sentinel_offline(w1, observer, o, w1.base_url)
    assert events(o, user.id) == ["online"], "closing one of two devices changes nothing"
    closed = time.monotonic()
    await laptop.close()
    offline = await o.expect(about(user.id, "offline"), timeout=GRACE + 2 * SWEEP + 2)
    assert time.monotonic() - closed >= GRACE - 0.2, "debounced by the grace period"
    assert offline["last_seen"] is not None
    await sentinel_offline(w1, observer, o, w2.base_url)
    assert events(o, user.id) == ["online", "offline"]
    found = (await w1.call("POST", "/v1/presence", observer.token, {"user_ids": [user.id]})).json()
    [entry] = found["presence"]
    assert (entry["status"], entry["last_seen"] is not None) == ("offline", True)
    await o.close()


async def test_away_only_when_every_device_is_idle(w1: Api, w2: Api) -> None:
    user, _, o, (d1, d2) = await watched(w1, w2.base_url, w1.base_url, w2.base_url)
    await d1.send_json({"type": "presence", "status": "idle"})
    await d1.send_json({"type": "ping"})
    await d1.expect(lambda f: f["type"] == "pong")  # d1's idle is handled (and published)
    await d2.send_json({"type": "presence", "status": "idle"})
    await o.expect(about(user.id, "away"))
    assert events(o, user.id) == ["online", "away"], "one idle device of two changes nothing"
    await d1.send_json({"type": "presence", "status": "active"})
    await o.expect(about(user.id, "online"))
    assert events(o, user.id) == ["online", "away", "online"]
    for ws in (o, d1, d2):
        await ws.close()


async def test_strangers_see_no_presence(w1: Api, w2: Api) -> None:
    user, friend, stranger = await w1.user(), await w1.user(), await w1.user()
    await w1.direct(user, friend)
    s = await Ws.connect(w2.base_url, stranger.token)
    u = await Ws.connect(w1.base_url, user.token)
    await u.close()
    await sentinel_offline(w1, stranger, s, w1.base_url)  # closes after u, on the same worker
    assert events(s, user.id) == []
    assert all(p["user_id"] != user.id for p in s.ready["presence"])
    found = (
        await w1.call("POST", "/v1/presence", stranger.token, {"user_ids": [user.id, stranger.id]})
    ).json()
    assert found["hidden"] == [user.id] and [p["user_id"] for p in found["presence"]] == [stranger.id]
    await s.close()


async def test_bad_presence_input(w1: Api) -> None:
    user = await w1.user()
    ws = await Ws.connect(w1.base_url, user.token)
    for frame in (
        {"type": "presence", "status": "sleeping"},
        {"type": "presence"},
        {"type": "presence", "status": 1},
    ):
        await ws.send_json({**frame, "id": "p"})
        error = await ws.expect(lambda f: f.get("ref") == "p")
        assert (error["code"], error["field"]) == ("bad_request", "status")
    await ws.close()
    bodies: list[dict[str, object]] = [
        {},
        {"user_ids": []},
        {"user_ids": ["1"]},
        {"user_ids": list(range(1, 1002))},
    ]
    for body in bodies:
        response = await w1.call("POST", "/v1/presence", user.token, body)
        assert response.status_code == 400 and response.json()["error"]["code"] == "bad_request"
    assert (await w1.call("POST", "/v1/presence", None, {"user_ids": [1]})).status_code == 401


async def test_crashed_worker_users_go_offline_within_ttl_plus_sweep_exactly_once(
    w1: Api, spawn_worker: Callable[..., Worker]
) -> None:
    doomed = spawn_worker()
    user, observer, o, [u] = await watched(w1, w1.base_url, doomed.url)
    await asyncio.sleep(1.2)  # at least one heartbeat refreshed the entry
    doomed.proc.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    await o.expect(about(user.id, "offline"), timeout=TTL + SWEEP + 3)
    took = time.monotonic() - killed
    print(f"offline seen {took:.2f}s after kill -9 (TTL {TTL}s + sweep {SWEEP}s)")
    assert took <= TTL + SWEEP + 0.5
    # Every worker sweeps several times before the sentinel's grace runs out: still one event.
    await sentinel_offline(w1, observer, o, w1.base_url)
    assert events(o, user.id) == ["online", "offline"]
    await u.close()
    await o.close()


async def test_rolling_restart_with_fast_reconnect_does_not_flap(
    w1: Api, w2: Api, spawn_worker: Callable[..., Worker]
) -> None:
    restarting, crashing = spawn_worker(), spawn_worker()
    user, observer, o, [u] = await watched(w1, w1.base_url, restarting.url)
    # The barrier: a sentinel on another worker that will crash, so its offline comes from a
    # TTL expiry later than any deadline (grace or TTL) the restart could have set for `user`.
    sentinel = await w1.user()
    await w1.direct(sentinel, observer)
    v = await Ws.connect(crashing.url, sentinel.token)
    await o.expect(about(sentinel.id, "online"))
    restarting.proc.send_signal(signal.SIGTERM)
    assert await u.wait_closed() == 1012
    moved = await Ws.connect(w2.base_url, user.token)  # reconnect elsewhere within the grace
    assert moved.ready["type"] == "ready"
    assert restarting.proc.wait(20) in (0, -signal.SIGTERM)
    crashing.proc.send_signal(signal.SIGKILL)
    await o.expect(about(sentinel.id, "offline"), timeout=TTL + GRACE + 2 * SWEEP + 5)
    assert events(o, user.id) == ["online"], "observers see no offline/online pair"
    await v.close()
    await moved.close()
    await o.close()


async def test_last_seen_is_when_the_last_device_closed(w1: Api) -> None:
    user, _, o, [u] = await watched(w1, w1.base_url, w1.base_url)
    closed_at = datetime.now(UTC)
    await u.close()
    offline = await o.expect(about(user.id, "offline"), timeout=GRACE + 2 * SWEEP + 2)
    seen = datetime.fromisoformat(offline["last_seen"])
    assert abs((seen - closed_at).total_seconds()) < 0.5, "not the later time the grace ran out"
    await o.close()


async def test_a_client_that_vanishes_without_a_close_goes_offline_after_the_ping_timeout(
    w1: Api, w2: Api
) -> None:
    user, observer = await w1.user(), await w1.user()
    await w1.direct(user, observer)
    o = await Ws.connect(w2.base_url, observer.token)
    client = await asyncio.create_subprocess_exec(
        sys.executable, "-c", STILL_CLIENT, ws_url(w1.base_url), user.token, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert client.stdout is not None
        assert await client.stdout.readline() == b"synced\n"
        await o.expect(about(user.id, "online"))
        # Frozen: the socket stays open (the kernel still acknowledges), but no ping is answered
        # and no close is ever sent. The worker's ping timeout (the presence TTL) must notice.
        client.send_signal(signal.SIGSTOP)
        offline = await o.expect(about(user.id, "offline"), timeout=4 * TTL + GRACE + 5)
        assert offline["last_seen"] is not None
    finally:
        client.kill()
        await client.wait()
    await o.close()
