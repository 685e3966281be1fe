"""Redis faults: sends stay fast, acked messages still reach online members, presence comes back.

Each test runs a worker against a Redis of its own (stopped, paused or flushed mid-test) and the
session's Postgres, and connects its sockets to that worker directly.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import asyncpg
import httpx

from chatd.security import hash_token
from tests.conftest import RedisServer, Worker
from tests.helpers import Api, Ws, ack_for

# docs/protocol.md §7 and §10: an acked message reaches connected members within 3 s after Redis
# takes commands again; a send is answered within about a second while Redis hangs. The
# assertions allow generous margins for a loaded 2-core machine.
HEAL_BOUND_S = 3.0
ACK_BOUND_S = 1.0
READY_BOUND_S = 2.0  # /readyz: a Redis PING unanswered this long is `redis: TimeoutError`
MARGIN_S = 2.0


async def pair(worker: Worker) -> tuple[int, Ws, Ws]:
    """A direct conversation with both members connected and one message delivered."""
    api = Api(worker.url)
    alice, bob = await api.user(), await api.user()
    cid = await api.direct(alice, bob)
    await api.http.aclose()
    a = await Ws.connect(worker.url, alice.token)
    b = await Ws.connect(worker.url, bob.token)
    assert (await a.send(cid, "warm up"))["seq"] == 1
    await b.wait_seq(cid, 1)
    return cid, a, b


def seqs(ws: Ws, cid: int) -> list[int]:
    return [f["seq"] for f in ws.messages(cid)]


async def test_acked_message_whose_publish_failed_reaches_online_member_without_later_message(
    spawn_worker: Callable[..., Worker], redis_server: RedisServer
) -> None:
    # Redis refuses the PUBLISH (as when it is unreachable or the pool stays busy) while the
    # subscribers stay connected: nothing else will ever expose the gap.
    worker = spawn_worker(CHATD_REDIS_URL=redis_server.url)
    cid, a, b = await pair(worker)
    await redis_server.command("ACL", "SETUSER", "default", "-publish")
    ack = await a.send(cid, "published late")
    assert ack["type"] == "ack" and ack["seq"] == 2, ack
    await asyncio.sleep(1)  # a few refused attempts
    await redis_server.command("ACL", "SETUSER", "default", "+publish")
    back = time.monotonic()
    await b.wait_seq(cid, 2, timeout=HEAL_BOUND_S + MARGIN_S)
    print(f"delivered {time.monotonic() - back:.2f}s after Redis took publishes again")
    assert seqs(b, cid) == [1, 2]
    await a.close()
    await b.close()


async def test_acked_message_reaches_online_member_after_redis_restart(
    spawn_worker: Callable[..., Worker], redis_server: RedisServer
) -> None:
    worker = spawn_worker(CHATD_REDIS_URL=redis_server.url)
    cid, a, b = await pair(worker)
    redis_server.stop()
    ack = await asyncio.wait_for(a.send(cid, "sent while Redis is down"), ACK_BOUND_S + MARGIN_S)
    assert ack["type"] == "ack" and ack["seq"] == 2, ack
    await asyncio.sleep(6)  # long enough for every reconnect backoff to reach its cap
    redis_server.start()
    back = time.monotonic()
    await b.wait_seq(cid, 2, timeout=HEAL_BOUND_S + MARGIN_S)
    print(f"delivered {time.monotonic() - back:.2f}s after Redis came back")
    assert seqs(b, cid) == [1, 2]
    # Live again: a later message follows, nothing twice.
    assert (await a.send(cid, "after"))["seq"] == 3
    await b.wait_seq(cid, 3)
    assert seqs(b, cid) == [1, 2, 3]
    await a.close()
    await b.close()


async def test_subscriber_resync_delivers_what_was_committed_while_it_was_away(
    spawn_worker: Callable[..., Worker], redis_server: RedisServer, db: asyncpg.Connection
) -> None:
    # Committed while the subscriber is disconnected and never published (no outbox holds it):
    # only the subscriber's resync, reading the tail from Postgres, can deliver it.
    worker = spawn_worker(CHATD_REDIS_URL=redis_server.url)
    cid, a, b = await pair(worker)
    sender = await db.fetchval("SELECT sender_id FROM messages WHERE conversation_id = $1", cid)
    redis_server.stop()
    await db.fetch("SELECT seq FROM chatd_append($1, $2, $3, $4)", cid, sender, "away", "while away")
    redis_server.start()
    await b.wait_seq(cid, 2, timeout=HEAL_BOUND_S + MARGIN_S)
    assert (await a.send(cid, "later"))["seq"] == 3  # and a later message follows it
    await b.wait_seq(cid, 3)
    assert [(f["seq"], f["body"]) for f in b.messages(cid)] == [
        (1, "warm up"),
        (2, "while away"),
        (3, "later"),
    ]
    await a.close()
    await b.close()


async def test_the_send_rate_limit_fails_open_while_redis_is_down(
    spawn_worker: Callable[..., Worker], redis_server: RedisServer
) -> None:
    worker = spawn_worker(
        CHATD_REDIS_URL=redis_server.url, CHATD_RATE_LIMIT_MESSAGES="3", CHATD_RATE_LIMIT_WINDOW_S="3600"
    )
    cid, a, b = await pair(worker)  # one send of three
    replies = [await a.send(cid, f"up{i}", f"up{i}") for i in range(3)]
    assert [r["type"] for r in replies] == ["ack", "ack", "error"] and replies[2]["code"] == "rate_limited"
    redis_server.stop()
    # The refused send first: until it comes again, later sends of the connection are held.
    down = [await a.send(cid, "up2", "up2")] + [await a.send(cid, f"down{i}") for i in range(5)]
    assert [r["type"] for r in down] == ["ack"] * 6, "allowed while Redis is away (fail open)"
    redis_server.start()
    # Back: the (empty) Redis counts again, once the limiter stops skipping it after the failure.
    for i in range(200):
        reply = await a.send(cid, f"back{i}")
        if reply["type"] == "error":
            assert reply["code"] == "rate_limited", reply
            break
        assert reply["type"] == "ack", reply
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the limit never applied again after Redis came back")
    await a.close()
    await b.close()


async def test_hung_redis_does_not_stall_sends_and_delivery_heals_after(
    spawn_worker: Callable[..., Worker], redis_server: RedisServer
) -> None:
    worker = spawn_worker(CHATD_REDIS_URL=redis_server.url)
    cid, a, b = await pair(worker)
    redis_server.pause()
    took: list[float] = []
    try:
        for i in range(5):
            started = time.monotonic()
            ack = await asyncio.wait_for(a.send(cid, f"while hung {i}"), ACK_BOUND_S + MARGIN_S)
            took.append(time.monotonic() - started)
            assert ack["type"] == "ack" and ack["seq"] == i + 2, ack
        async with httpx.AsyncClient(base_url=worker.url, timeout=10) as http:
            asked = time.monotonic()
            ready = await http.get("/readyz")  # answers, and says why it is not ready
            answered = time.monotonic() - asked
        print(f"readyz answered in {answered:.2f}s")
        assert ready.status_code == 503 and "redis: TimeoutError" in ready.json()["problems"]
        assert answered < READY_BOUND_S + MARGIN_S
    finally:
        print("ack times while Redis hung:", [round(t, 2) for t in took])
        redis_server.resume()
    back = time.monotonic()
    await b.wait_seq(cid, 6, timeout=HEAL_BOUND_S + MARGIN_S)
    print(f"delivered {time.monotonic() - back:.2f}s after SIGCONT")
    assert seqs(b, cid) == [1, 2, 3, 4, 5, 6]
    assert sum(took) / len(took) < ACK_BOUND_S, "most sends do not wait for Redis at all"
    await a.close()
    await b.close()


async def test_presence_is_rebuilt_soon_after_redis_loses_its_data(
    spawn_worker: Callable[..., Worker], redis_server: RedisServer
) -> None:
    # A heartbeat far longer than the sweep: only a detection of the loss can bring it back.
    worker = spawn_worker(
        CHATD_REDIS_URL=redis_server.url,
        CHATD_PRESENCE_TTL_S="120",
        CHATD_PRESENCE_HEARTBEAT_S="60",
        CHATD_PRESENCE_SWEEP_S="0.5",
    )
    api = Api(worker.url)
    user, observer = await api.user(), await api.user()
    await api.direct(user, observer)
    u = await Ws.connect(worker.url, user.token)

    async def status() -> str:
        response = await api.call("POST", "/v1/presence", observer.token, {"user_ids": [user.id]})
        assert response.status_code == 200, response.text
        found: str = response.json()["presence"][0]["status"]
        return found

    assert await status() == "online"
    await asyncio.sleep(1)  # a sweep or two have set this worker's marker since
    await redis_server.command("FLUSHALL")
    lost = time.monotonic()
    seen = []
    while time.monotonic() - lost < 0.5 + MARGIN_S + 1:
        seen.append(await status())
        if seen[-1] == "online":
            break
        await asyncio.sleep(0.1)
    print(f"statuses after FLUSHALL: {seen[:3]}...{seen[-1]} in {time.monotonic() - lost:.2f}s")
    assert seen[-1] == "online", "presence rebuilt within a few sweeps, not at the next heartbeat"
    await u.close()
    await api.http.aclose()


async def test_a_read_or_status_frame_while_redis_hangs_does_not_hold_up_later_sends(
    spawn_worker: Callable[..., Worker], redis_server: RedisServer
) -> None:
    # Frames of one socket are handled in order: a `read` or `presence` frame stuck on a hung
    # Redis would hold up every `send` behind it, however bounded the send path itself is.
    worker = spawn_worker(CHATD_REDIS_URL=redis_server.url)
    cid, a, b = await pair(worker)
    redis_server.pause()
    try:
        await a.send_json({"type": "read", "id": "r", "conversation_id": cid, "seq": 1})
        await a.send_json({"type": "presence", "status": "idle"})
        await a.send_json(
            {"type": "send", "conversation_id": cid, "client_msg_id": "after-read", "body": "x"}
        )
        ack = await a.expect(ack_for("after-read"), timeout=2 * ACK_BOUND_S + MARGIN_S)
        assert ack["seq"] == 2, ack
        read = await a.expect(lambda f: f.get("ref") == "r")
        assert read["type"] == "error" and read["code"] == "unavailable", read
    finally:
        redis_server.resume()
    await b.wait_seq(cid, 2, timeout=HEAL_BOUND_S + MARGIN_S)
    await a.close()
    await b.close()


async def test_a_token_revoked_while_no_revoke_can_arrive_closes_its_socket_after_a_resync(
    spawn_worker: Callable[..., Worker], redis_server: RedisServer, db: asyncpg.Connection
) -> None:
    # The token is gone from Postgres but no revoke will ever be published for it (the worker
    # that logged it out died between its DELETE and its PUBLISH, or this worker's subscriber
    # was away when it came): the subscriber's resync after Redis returns must close the socket.
    worker = spawn_worker(CHATD_REDIS_URL=redis_server.url)
    api = Api(worker.url)
    alice = await api.user()
    await api.http.aclose()
    a = await Ws.connect(worker.url, alice.token)
    redis_server.stop()
    await db.execute("DELETE FROM tokens WHERE token_hash = $1", hash_token(alice.token))
    redis_server.start()
    assert await a.wait_closed(timeout=HEAL_BOUND_S + MARGIN_S) == 4001
