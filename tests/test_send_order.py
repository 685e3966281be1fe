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

from chatd.client.session import ChatSession
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


class BurstyLink:
    """A TCP link to a local port that passes the client's bytes on at once and the server's
    only every `every` seconds, all that arrived meanwhile at once (a mobile radio that wakes
    up now and then)."""

    def __init__(self, port: int, every: float) -> None:
        self.port, self.every = port, every
        self.url = ""
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    async def open(cls, port: int, every: float) -> BurstyLink:
        link = cls(port, every)
        link._server = await asyncio.start_server(link._serve, "127.0.0.1", 0)
        link.url = f"http://127.0.0.1:{link._server.sockets[0].getsockname()[1]}"
        return link

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self.port)
        held = bytearray()
        ended = asyncio.Event()

        async def up() -> None:
            with contextlib.suppress(ConnectionError):
                while data := await client_r.read(65536):
                    server_w.write(data)
            server_w.close()

        async def collect() -> None:
            with contextlib.suppress(ConnectionError):
                while data := await server_r.read(65536):
                    held.extend(data)
            ended.set()

        async def down() -> None:
            with contextlib.suppress(ConnectionError):
                while not (ended.is_set() and not held):
                    await asyncio.sleep(self.every)
                    client_w.write(bytes(held))
                    held.clear()
                    await client_w.drain()
            client_w.close()

        for part in (up(), collect(), down()):
            task = asyncio.create_task(part)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)


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


async def test_past_the_limit_a_resend_of_a_stored_send_is_answered_not_refused(
    spawn_worker: Callable[..., Worker],
) -> None:
    """A client that reconnects resends what has no ack; what is stored already is answered
    with its duplicate ack even past the limit. A refusal of it would hold the connection's
    later sends until it came again, which a client that meanwhile saw it stored (its event
    in the catch-up) might never do."""
    worker = spawn_worker(CHATD_RATE_LIMIT_MESSAGES="2", CHATD_RATE_LIMIT_WINDOW_S="3600")
    api = Api(worker.url)
    alice, bob = await api.user(), await api.user()
    cid = await api.direct(alice, bob)
    ws = await Ws.connect(worker.url, alice.token)
    first = [await ws.send(cid, f"m{n}", f"m{n}-{alice.id}") for n in range(2)]
    assert [r["type"] for r in first] == ["ack", "ack"], first
    again = await ws.send(cid, "m0", f"m0-{alice.id}")  # the third send counted: over the limit
    assert again["type"] == "ack" and again["duplicate"] and again["seq"] == first[0]["seq"], again
    new = await ws.send(cid, "m2", f"m2-{alice.id}")
    assert new["type"] == "error" and new["code"] == "rate_limited", new
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


async def test_the_terminal_client_keeps_the_typed_order_through_the_limit_and_a_reconnect(
    spawn_worker: Callable[..., Worker], db: asyncpg.Connection
) -> None:
    """The terminal client (chatd.client.session) typed into faster than the default limit,
    over a link that delivers the server's replies in bursts, its connection dropped in the
    middle of the burst: every line is stored, in the order typed. It used to resend each
    refused line on a timer of its own, all aimed at the end of the limit's window (so the
    replies that arrived together fired in reverse), and stored them in that order."""
    worker = spawn_worker(CHATD_RATE_LIMIT_MESSAGES="50", CHATD_RATE_LIMIT_WINDOW_S="10")
    api = Api(worker.url)
    alice, bob = await api.user(), await api.user()
    cid = await api.direct(alice, bob)
    lines: list[str] = []
    changed = asyncio.Event()  # the client calls refresh() on every frame it handles
    link = await BurstyLink.open(worker.port, every=0.5)
    chat = ChatSession(
        link.url,
        {"token": alice.token, "user_id": alice.id},
        {"id": cid, "kind": "direct", "title": None},
        {alice.id: alice.name, bob.id: bob.name},
        lines.append,
        changed.set,
    )

    async def until(done: Callable[[], bool]) -> None:
        while not done():
            assert not running.done(), running
            changed.clear()
            await changed.wait()

    running = asyncio.create_task(chat.run())
    total, every = 60, 0.033
    try:
        async with asyncio.timeout(10):
            await until(lambda: chat.synced)
        # The burst ends two seconds before the limit's window does: the refused lines wait
        # a few seconds, not ten, and are refused again after the reconnect.
        now = time.time()
        ends = (now // 10 + 1) * 10
        start = ends - 4 if ends - 4 > now + 0.2 else ends + 6
        await asyncio.sleep(start - time.time())
        for n in range(total):
            chat.submit(f"line {n}")
            await asyncio.sleep(max(0.0, start + (n + 1) * every - time.time()))
        # The connection drops while the refused lines wait to be sent again: the refusals
        # (from the 51st line on, 1.65 s into the burst) have passed the link by then.
        await asyncio.sleep(start + 2.6 - time.time())
        assert chat.ws is not None
        chat.ws.transport.abort()
        async with asyncio.timeout(40):
            await until(lambda: not chat.outbox)
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        await link.close()
    assert any("disconnected" in line for line in lines), lines
    assert await stored_bodies(db, cid) == [f"line {n}" for n in range(total)]
    assert [line for line in lines if "not sent" in line] == []
    await api.http.aclose()
