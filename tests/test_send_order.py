"""One connection's sends are stored in send order (docs/protocol.md §7): whatever another user
sends at the same moment, and whatever the rate limit refuses (a refusal holds every later send
of the connection until the refused one is sent again)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import time
import uuid
from collections.abc import Callable

import asyncpg

from chatd.devstack import Stack
from tests.conftest import Worker
from tests.helpers import Api, Frame, Ws, wait_until_blocked

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


class InOrderClient:
    """A client that pipelines and keeps its order (docs/protocol.md §8): one outbox in send
    order; a `rate_limited` or `unavailable` reply to a send rewinds to that send, whose later
    sends already written are refused too (their replies are ignored), and after
    `retry_after_ms` everything from it on that is not acknowledged is written again, in order."""

    def __init__(self, ws: Ws, cid: int, latency: float = 0.0) -> None:
        self.ws, self.cid, self.latency = ws, cid, latency
        self.outbox: list[str] = []  # client_msg_ids in the order typed; the body is the index
        self.acked: dict[str, int] = {}  # client_msg_id -> seq
        self.refusals: list[Frame] = []
        self._next = 0  # the outbox position written next
        self._written: collections.deque[tuple[str, int]] = collections.deque()  # replies due
        self._generation = 0  # a rewind makes everything written before it stale
        self._resume = 0.0  # loop time before which nothing is written
        self._changed = asyncio.Event()

    def type(self) -> None:
        self.outbox.append(f"t{len(self.outbox)}-{uuid.uuid4().hex[:8]}")
        self._changed.set()

    async def run(self, total: int) -> None:
        reader = asyncio.create_task(self._read())
        try:
            await self._write(total)
        finally:
            reader.cancel()

    async def _write(self, total: int) -> None:
        loop = asyncio.get_running_loop()
        while len(self.acked) < total:
            wait = self._resume - loop.time()
            if wait <= 0 and self._next < len(self.outbox):
                cmid = self.outbox[self._next]
                self._next += 1
                if cmid not in self.acked:
                    self._written.append((cmid, self._generation))
                    body = str(self.outbox.index(cmid))
                    await self.ws.send_json({**send_frame(self.cid, cmid, body), "id": cmid})
                continue
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), wait if wait > 0 else None)

    async def _read(self) -> None:
        """Replies as they arrive, handled `latency` later (the way back from the server)."""
        arrived: asyncio.Queue[tuple[float, Frame]] = asyncio.Queue()

        async def receive() -> None:
            while True:
                reply = await self.ws.expect(lambda f: f["type"] in ("ack", "error"), timeout=60)
                arrived.put_nowait((time.monotonic(), reply))

        receiver = asyncio.create_task(receive())
        try:
            while True:
                at, reply = await arrived.get()
                await asyncio.sleep(max(0.0, at + self.latency - time.monotonic()))
                self._reply(reply)
        finally:
            receiver.cancel()

    def _reply(self, reply: Frame) -> None:
        cmid, generation = self._written.popleft()
        assert reply.get("ref") == cmid, (reply, cmid)  # replies in send order
        if reply["type"] == "ack":
            self.acked[cmid] = reply["seq"]
        elif reply["code"] in ("rate_limited", "unavailable"):
            self.refusals.append(reply)
            if generation == self._generation:  # else written before the rewind: refused too
                self._generation += 1
                self._next = self.outbox.index(cmid)
                self._resume = asyncio.get_running_loop().time() + reply.get("retry_after_ms", 200) / 1000
        else:
            raise AssertionError(reply)
        self._changed.set()


async def stored_bodies(db: asyncpg.Connection, cid: int) -> list[str]:
    return [
        r["body"]
        for r in await db.fetch("SELECT body FROM messages WHERE conversation_id = $1 ORDER BY seq", cid)
    ]


async def test_sixty_sends_in_two_seconds_at_the_default_limit_are_stored_in_send_order(
    spawn_worker: Callable[..., Worker], db: asyncpg.Connection
) -> None:
    """Issue 19 item 1: 60 sends typed within 2 s against the default limit of 50 per 10 s.
    The burst is placed so that the limit's window ends while the client, which learns of the
    first refusal only 0.3 s later, still sends: sends read after the window's end were
    accepted at once (the new window had room, and the first refusal's retry_after_ms had
    passed) and stored before the refused ones, which the client resent later. Now every send
    after a refused one is refused too until that one is sent again, so the resends come first."""
    worker = spawn_worker(CHATD_RATE_LIMIT_MESSAGES="50", CHATD_RATE_LIMIT_WINDOW_S="10")
    api = Api(worker.url)
    alice, bob = await api.user(), await api.user()
    cid = await api.direct(alice, bob)
    ws = await Ws.connect(worker.url, alice.token)
    client = InOrderClient(ws, cid, latency=0.3)  # a phone's: it keeps sending for 0.3 s more
    total, every = 60, 0.033
    # The window ends between the 56th and 57th send: the 51st to 56th are refused before.
    now = time.time()
    ends = (now // 10 + 1) * 10
    start = ends - 56 * every if ends - 56 * every > now + 0.5 else ends + 10 - 56 * every
    await asyncio.sleep(start - time.time())

    async def typist() -> None:
        for n in range(total):
            client.type()
            await asyncio.sleep(max(0.0, start + (n + 1) * every - time.time()))

    await asyncio.gather(typist(), client.run(total))
    assert client.refusals, "the limit was never reached"
    assert await stored_bodies(db, cid) == [str(n) for n in range(total)]
    assert [client.acked[cmid] for cmid in client.outbox] == list(range(1, total + 1))
    await ws.close()
    await api.http.aclose()


async def test_a_refused_send_holds_later_sends_of_its_connection_until_it_is_sent_again(
    spawn_worker: Callable[..., Worker], db: asyncpg.Connection
) -> None:
    """The rule of §7: after `rate_limited`, a later send is refused even once the limit has
    room again, until the refused send comes again; then both go through, in order."""
    worker = spawn_worker(CHATD_RATE_LIMIT_MESSAGES="2", CHATD_RATE_LIMIT_WINDOW_S="1")
    api = Api(worker.url)
    alice, bob = await api.user(), await api.user()
    cid = await api.direct(alice, bob)
    ws = await Ws.connect(worker.url, alice.token)
    await asyncio.sleep(1 - time.time() % 1)  # three sends well inside one window
    replies = [await ws.send(cid, f"m{n}", f"m{n}-{alice.id}") for n in range(3)]
    assert [r["type"] for r in replies] == ["ack", "ack", "error"], replies
    assert replies[2]["code"] == "rate_limited" and replies[2]["retry_after_ms"] > 0
    await asyncio.sleep(replies[2]["retry_after_ms"] / 1000 + 0.05)  # the limit has room again
    later = await ws.send(cid, "m3", f"m3-{alice.id}")
    assert later["type"] == "error" and later["code"] == "rate_limited", later
    again = await ws.send(cid, "m2", f"m2-{alice.id}")
    assert again["type"] == "ack", again
    later = await ws.send(cid, "m3", f"m3-{alice.id}")
    assert later["type"] == "ack" and later["seq"] == again["seq"] + 1, later
    assert await stored_bodies(db, cid) == ["m0", "m1", "m2", "m3"]
    await ws.close()
    await api.http.aclose()


async def test_a_send_whose_commit_failed_holds_later_sends_until_it_is_sent_again(
    spawn_worker: Callable[..., Worker], stack: Stack, db: asyncpg.Connection
) -> None:
    """A failed commit (`unavailable`) holds the later sends the same way: otherwise a send
    read after it would be stored before its resend."""
    worker = spawn_worker()
    api = Api(worker.url)
    alice, bob = await api.user(), await api.user()
    cid = await api.direct(alice, bob)
    ws = await Ws.connect(worker.url, alice.token)
    watcher = await asyncpg.connect(stack.database_url)
    try:
        async with db.transaction():
            await db.execute("SELECT 1 FROM conversations WHERE id = $1 FOR UPDATE", cid)
            await ws.send_json({**send_frame(cid, "first", "first"), "id": "first"})
            await wait_until_blocked(watcher, await db.fetchval("SELECT pg_backend_pid()"))
            await ws.send_json({**send_frame(cid, "second", "second"), "id": "second"})
            # The commit fails: its statement is cancelled as if the database had gone away.
            await watcher.execute(
                "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
                await db.fetchval("SELECT pg_backend_pid()"),
            )
            first = await ws.expect(replying_to("first"))
            assert first["type"] == "error" and first["code"] == "unavailable", first
        second = await ws.expect(replying_to("second"))
        assert second["type"] == "error" and second["code"] == "unavailable", second
    finally:
        await watcher.close()
    first = await ws.send(cid, "first", "first")
    second = await ws.send(cid, "second", "second")
    assert (first["type"], second["type"]) == ("ack", "ack"), (first, second)
    assert await stored_bodies(db, cid) == ["first", "second"]
    await ws.close()
    await api.http.aclose()
