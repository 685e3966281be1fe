"""Delivery receipts: a device confirms `received` up to a seq; "delivered" (1:1) and
"delivered to K of N" (groups), exact, never fewer than read, never for a device that did not
confirm (docs/protocol.md §4.8)."""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Callable
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
import websockets

from tests.conftest import Worker
from tests.helpers import QUIET_REDIS_WORKER, Api, User, Ws, redis_calls, ws_url

# Each test runs against one Redis and against a Redis Cluster (conftest.py).
pytestmark = pytest.mark.both_redis


async def received(ws: Ws, cid: int, seq: int) -> None:
    """Confirm receipt up to `seq`; a ping's pong is the barrier (frames are answered in order,
    and `received` has no reply of its own unless it fails)."""
    await ws.send_json({"type": "received", "conversation_id": cid, "seq": seq})
    ref = f"p-{random.random()}"
    await ws.send_json({"type": "ping", "id": ref})
    reply = await ws.expect(lambda f: f["type"] in ("pong", "error"))
    assert reply["type"] == "pong", reply


async def counts(api: Api, user: User, cid: int, lo: int, hi: int) -> dict[int, dict[str, Any]]:
    response = await api.call(
        "GET", f"/v1/conversations/{cid}/receipts", user.token, params={"from": lo, "to": hi}
    )
    assert response.status_code == 200, response.text
    return {c["seq"]: c for c in response.json()["counts"]}


async def test_direct_delivered_only_once_a_device_confirms_it(w1: Api, w2: Api) -> None:
    alice, bob = await w1.user(), await w1.user()
    cid = await w1.direct(alice, bob)
    await w1.direct(bob, alice)  # bob opened it: his receipts are shown (§4.9)
    a = await Ws.connect(w1.base_url, alice.token)
    b = await Ws.connect(w2.base_url, bob.token)
    first = await a.send(cid, "one")
    await b.wait_seq(cid, first["seq"])
    assert (await counts(w1, alice, cid, 1, first["seq"]))[first["seq"]]["delivered_to"] == 0
    await received(b, cid, first["seq"])
    event = await a.expect(lambda f: f["type"] == "delivered")
    assert event == {"type": "delivered", "conversation_id": cid, "user_id": bob.id, "seq": first["seq"]}
    second = await a.send(cid, "two")  # bob's device gets it and does not confirm
    await b.wait_seq(cid, second["seq"])
    third = await a.send(cid, "three")
    await b.wait_seq(cid, third["seq"])
    await received(b, cid, third["seq"])  # cumulative: covers two as well
    later = await a.expect(lambda f: f["type"] == "delivered")
    assert later["seq"] == third["seq"]
    assert [f["seq"] for f in a.frames if f["type"] == "delivered"] == [first["seq"], third["seq"]]
    found = await counts(w2, bob, cid, first["seq"], third["seq"])
    assert [found[s]["delivered_to"] for s in (first["seq"], second["seq"], third["seq"])] == [1, 1, 1]
    await received(b, cid, first["seq"])  # older: changes nothing, sends nothing
    await a.close()
    await b.close()


async def test_a_stalled_socket_does_not_count_as_delivered(w1: Api, w2: Api) -> None:
    alice, bob = await w1.user(), await w1.user()
    cid = await w1.direct(alice, bob)
    await w1.direct(bob, alice)
    a = await Ws.connect(w1.base_url, alice.token)
    # Bob's phone: connected and synced on alice's worker, then it never reads again.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    host, port = w1.base_url.removeprefix("http://").split(":")
    sock.connect((host, int(port)))
    sock.setblocking(False)
    stalled = await websockets.connect(ws_url(w1.base_url), sock=sock, max_queue=1, compression=None)
    await stalled.send(orjson.dumps({"type": "auth", "token": bob.token}).decode())
    while orjson.loads(await asyncio.wait_for(stalled.recv(), 10))["type"] != "synced":
        pass
    sent = [await a.send(cid, f"to the stalled phone {i} " + "x" * 2000) for i in range(5)]
    last = sent[-1]["seq"]
    # The server has handed them to the stalled socket (alice's own copies went out in the same
    # pass); the phone never confirmed, so nothing is delivered.
    await a.wait_seq(cid, last)
    assert all(c["delivered_to"] == 0 for c in (await counts(w1, alice, cid, 1, last)).values())
    # Bob's laptop connects, catches up and confirms: now, and only now, alice sees it.
    laptop = await Ws.connect(w2.base_url, bob.token, since={cid: 0})
    await laptop.wait_seq(cid, last)
    await received(laptop, cid, last)
    event = await a.expect(lambda f: f["type"] == "delivered")
    assert event["seq"] == last
    assert [f["seq"] for f in a.frames if f["type"] == "delivered"] == [last]  # none before it
    stalled.transport.abort()
    await a.close()
    await laptop.close()


async def test_group_delivered_to_k_of_n_is_exact_under_concurrent_receipts(w1: Api, w2: Api) -> None:
    sender = await w1.user()
    members = [await w1.user() for _ in range(24)]
    cid = await w1.group(sender, members)
    s = await Ws.connect(w1.base_url, sender.token)
    sockets = [await Ws.connect((w1, w2)[i % 2].base_url, u.token) for i, u in enumerate(members)]
    for ws in sockets:  # each takes part (§4.9: only then do their receipts show)
        assert (await ws.send(cid, "here"))["type"] == "ack"
    sent = [await s.send(cid, f"m{i}") for i in range(10)]
    seqs = [ack["seq"] for ack in sent]
    rng = random.Random(21)
    final = [rng.choice([0, *seqs]) for _ in members]

    async def confirm(ws: Ws, upto: int) -> None:
        if upto == 0:
            return
        await ws.wait_seq(cid, upto)
        steps = sorted({rng.choice([q for q in seqs if q <= upto]) for _ in range(3)} | {upto})
        rng.shuffle(steps)  # out of order and overlapping: the pointer keeps the highest
        for seq in steps:
            await received(ws, cid, seq)

    await asyncio.gather(*(confirm(ws, upto) for ws, upto in zip(sockets, final, strict=True)))
    expected = {seq: sum(1 for upto in final if upto >= seq) for seq in seqs}
    found = await counts(w2, sender, cid, seqs[0], seqs[-1])
    assert {seq: found[seq]["delivered_to"] for seq in seqs} == expected
    assert all(found[seq]["of"] == len(members) for seq in seqs)
    # The pushed counts reach the sender and end at the same numbers.
    async with asyncio.timeout(10):
        while True:
            pushed: dict[int, int] = {}
            for frame in s.frames:
                if frame["type"] == "receipts":
                    pushed.update({c["seq"]: c["delivered_to"] for c in frame["counts"]})
            if all(pushed.get(seq) == n for seq, n in expected.items() if n):
                break
            await s.expect(lambda f: f["type"] == "receipts")
    for ws in (s, *sockets):
        await ws.close()


async def test_delivered_is_never_below_read(w1: Api, w2: Api) -> None:
    sender, reader, getter, idle = await w1.user(), await w1.user(), await w1.user(), await w1.user()
    cid = await w1.group(sender, [reader, getter, idle])
    s = await Ws.connect(w1.base_url, sender.token)
    r = await Ws.connect(w2.base_url, reader.token)
    g = await Ws.connect(w1.base_url, getter.token)
    i = await Ws.connect(w2.base_url, idle.token)
    for ws in (r, g, i):
        assert (await ws.send(cid, "here"))["type"] == "ack"
    sent = [await s.send(cid, f"m{n}") for n in range(5)]
    seqs = [ack["seq"] for ack in sent]
    await r.wait_seq(cid, seqs[-1])
    assert (await r.read(cid, seqs[-1]))["type"] == "read_state"  # read, never confirmed received
    await g.wait_seq(cid, seqs[2])
    await received(g, cid, seqs[2])
    found = await counts(w1, sender, cid, seqs[0], seqs[-1])
    assert [(found[q]["read_by"], found[q]["delivered_to"]) for q in seqs] == [(1, 2)] * 3 + [(1, 1)] * 2
    for frame in s.frames:
        for c in frame.get("counts", []) if frame["type"] == "receipts" else []:
            assert c["delivered_to"] >= c["read_by"], frame

    # Direct: a read is a delivery too.
    alice, bob = await w1.user(), await w1.user()
    direct = await w1.direct(alice, bob)
    await w1.direct(bob, alice)
    a = await Ws.connect(w1.base_url, alice.token)
    b = await Ws.connect(w2.base_url, bob.token)
    ack = await a.send(direct, "hello")
    await b.wait_seq(direct, ack["seq"])
    assert (await b.read(direct, ack["seq"]))["type"] == "read_state"
    await a.expect(lambda f: f["type"] == "read")
    assert (await counts(w1, alice, direct, ack["seq"], ack["seq"]))[ack["seq"]]["delivered_to"] == 1
    for ws in (s, r, g, i, a, b):
        await ws.close()


async def test_received_bad_input_and_outsiders(w1: Api) -> None:
    alice, bob, mallory = await w1.user(), await w1.user(), await w1.user()
    cid = await w1.direct(alice, bob)
    a = await Ws.connect(w1.base_url, alice.token)
    assert (await a.send(cid, "hi"))["type"] == "ack"
    m = await Ws.connect(w1.base_url, mallory.token)
    bad: list[tuple[dict[str, Any], str]] = [
        ({"type": "received", "conversation_id": cid, "seq": 1, "id": "x1"}, "not_member"),
        ({"type": "received", "conversation_id": cid, "id": "x2"}, "bad_request"),
        ({"type": "received", "conversation_id": "1", "seq": 1, "id": "x3"}, "bad_request"),
        ({"type": "received", "conversation_id": cid, "seq": 0, "id": "x4"}, "bad_request"),
    ]
    for frame, code in bad:
        await m.send_json(frame)
        ref = frame["id"]

        def answers(f: dict[str, Any], ref: Any = ref) -> bool:
            return bool(f.get("ref") == ref)

        error = await m.expect(answers)
        assert (error["type"], error["code"]) == ("error", code)
    b = await Ws.connect(w1.base_url, bob.token)
    await b.send_json({"type": "received", "conversation_id": cid, "seq": 99, "id": "x5"})
    error = await b.expect(lambda f: f.get("ref") == "x5")
    assert (error["code"], error["last_seq"]) == ("seq_out_of_range", 1)
    for ws in (a, m, b):
        await ws.close()


async def test_confirmations_cost_a_script_call_a_batch_not_one_a_frame(
    spawn_worker: Callable[..., Worker], private_redis: str
) -> None:
    # Only what the confirmations do is counted (helpers.QUIET_REDIS_WORKER).
    worker = spawn_worker(CHATD_REDIS_URL=private_redis, **QUIET_REDIS_WORKER)
    api = Api(worker.url)
    sender = await api.user()
    members = [await api.user() for _ in range(10)]
    cid = await api.group(sender, members)
    s = await Ws.connect(worker.url, sender.token)
    sockets = [await Ws.connect(worker.url, u.token) for u in members]
    for ws in sockets:  # each takes part: their confirmations show, so each move widens a range
        assert (await ws.send(cid, "here"))["type"] == "ack"
    seqs = [(await s.send(cid, f"m{i}"))["seq"] for i in range(20)]
    for ws in sockets:
        await ws.wait_seq(cid, seqs[-1])
        await received(ws, cid, seqs[0] - 1)  # the users' state is loaded outside the count
    redis = aioredis.Redis.from_url(private_redis)
    before = await redis_calls(redis)
    for ws in sockets:  # a confirmation per message, then each again (a client that retries)
        for seq in seqs + seqs:
            await ws.send_json({"type": "received", "conversation_id": cid, "seq": seq})
    for ws in sockets:
        await received(ws, cid, seqs[-1])  # the pong: every earlier confirmation took effect
    scripts = (await redis_calls(redis))["evalsha"] - before["evalsha"]
    found = await counts(api, sender, cid, seqs[0], seqs[-1])
    assert all(found[seq]["delivered_to"] == len(members) for seq in seqs), found
    print(f"{len(sockets) * 41} received frames: {scripts} Redis script calls")
    # One by one that was a script call a frame that moved a pointer (200), and one more to
    # widen the group's changed range (200); in batches it is two a batch.
    assert scripts < 100
    for ws in (s, *sockets):
        await ws.close()
    await api.http.aclose()
    await redis.aclose()
