"""One connection's sends are stored in send order (docs/protocol.md §7): whatever another user
sends at the same moment, and whatever the rate limit refuses (a refusal holds every later send
of the connection until the refused one is sent again)."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Callable

from tests.helpers import Api, Frame, Ws

VICTIMS_PER_WORKER = 4
VICTIM_SENDS = 2000
ATTACKS_AT_ONCE = 4


def send_frame(cid: int, client_msg_id: str, body: str) -> Frame:
    return {"type": "send", "conversation_id": cid, "client_msg_id": client_msg_id, "body": body}


def replying_to(ref: str) -> Callable[[Frame], bool]:
    return lambda f: f.get("ref") == ref


async def pipeline(ws: Ws, cid: int, count: int, window: int = 64) -> list[Frame]:
    """Send `count` messages to `cid`, up to `window` unanswered; the replies in send order."""
    ids = [f"v{n}-{uuid.uuid4().hex[:10]}" for n in range(count)]
    replies: list[Frame] = []
    room = asyncio.Semaphore(window)

    async def read() -> None:
        for _ in ids:
            replies.append(await ws.expect(lambda f: f["type"] in ("ack", "error"), timeout=60))
            room.release()

    reader = asyncio.create_task(read())
    for n, cmid in enumerate(ids):
        await room.acquire()
        await ws.send_json(send_frame(cid, cmid, f"#{n}"))
    await reader
    assert [r.get("client_msg_id") for r in replies] == ids, "replies in send order"
    return replies


async def test_a_duplicate_id_racing_across_workers_never_reorders_other_users_sends(
    w1: Api, w2: Api
) -> None:
    """Issue 19 item 12: an attacker sends one fresh client_msg_id to two conversations at the
    same instant, from a socket on each worker. The statement of one of the two group commits
    then fails on the unique index; the victims' sends that shared its batch must still get
    seqs in the order they were sent."""
    attacker = await w1.user("att")
    mine = [await w1.group(attacker, [], title=f"a{n}") for n in range(2)]
    sockets = [await Ws.connect(api.base_url, attacker.token) for api in (w1, w2)]
    victims = []
    for n in range(2 * VICTIMS_PER_WORKER):
        victim, peer = await w1.user("vic"), await w1.user("peer")
        cid = await w1.direct(victim, peer)
        victims.append((await Ws.connect((w1, w2)[n % 2].base_url, victim.token), cid))

    done = asyncio.Event()
    rounds = 0

    async def attack() -> None:
        nonlocal rounds
        while not done.is_set():
            key = f"x-{uuid.uuid4().hex}"
            twice = [{**send_frame(cid, key, "dup"), "id": key} for cid in mine]
            await asyncio.gather(*(ws.send_json(f) for ws, f in zip(sockets, twice, strict=True)))
            answers = [await ws.expect(replying_to(key), timeout=60) for ws in sockets]
            kinds = sorted(a["type"] if a["type"] == "ack" else a["code"] for a in answers)
            assert kinds == ["ack", "client_msg_id_conflict"], answers
            rounds += 1

    attackers = [asyncio.create_task(attack()) for _ in range(ATTACKS_AT_ONCE)]
    try:
        results = await asyncio.gather(*(pipeline(ws, cid, VICTIM_SENDS) for ws, cid in victims))
    finally:
        done.set()
        await asyncio.gather(*attackers)
    for replies in results:
        assert all(r["type"] == "ack" for r in replies), [r for r in replies if r["type"] != "ack"][:3]
        seqs = [r["seq"] for r in replies]
        inversions = [(n, a, b) for n, (a, b) in enumerate(itertools.pairwise(seqs)) if b <= a]
        assert not inversions, f"(send, seq, next seq) after {rounds} attacks: {inversions[:5]}"
        assert seqs == list(range(1, VICTIM_SENDS + 1))
    for ws, _ in [*victims, *((s, 0) for s in sockets)]:
        await ws.close()
