"""Races between a member's sends and their removal, and between `auth` and logout."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import orjson
import pytest
import websockets

from chatd import policy
from chatd.devstack import Stack
from chatd.errors import ChatdError, Code
from chatd.storage.conversations import ConversationStore
from chatd.storage.messages import MessageStore
from chatd.storage.records import Append
from tests.conftest import Worker
from tests.helpers import Api, Frame, User, Ws, ws_url


@pytest.fixture
async def store(stack: Stack) -> AsyncIterator[MessageStore]:
    pool = await asyncpg.create_pool(stack.database_url, min_size=1, max_size=4)
    yield MessageStore(pool)
    await pool.close()


def _answers(ref: str) -> Callable[[Frame], bool]:
    return lambda f: f.get("ref") == ref


async def _removed_while_waiting(
    stack: Stack, db: asyncpg.Connection, cid: int, user_id: int, append: Callable[[], Awaitable[Any]]
) -> Any:
    """Run `append` while a removal of `user_id` holds the conversation lock, then commit it.

    The append starts after the removal has deleted the member row (uncommitted) and is seen
    waiting for the lock before the removal commits: exactly the interleaving of the race.
    """
    watcher = await asyncpg.connect(stack.database_url)
    try:
        async with db.transaction():
            await db.execute("SELECT 1 FROM conversations WHERE id = $1 FOR UPDATE", cid)
            await db.execute("DELETE FROM members WHERE conversation_id = $1 AND user_id = $2", cid, user_id)
            pid = await db.fetchval("SELECT pg_backend_pid()")
            task = asyncio.ensure_future(append())
            async with asyncio.timeout(10):
                while not await watcher.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))", pid
                ):
                    assert not task.done(), "the append did not wait for the conversation lock"
                    await asyncio.sleep(0.005)
        return await asyncio.gather(task, return_exceptions=True)
    finally:
        await watcher.close()


async def test_batched_append_after_a_concurrent_removal_is_refused(
    w1: Api, stack: Stack, db: asyncpg.Connection, store: MessageStore
) -> None:
    owner, bob = await w1.user(), await w1.user()
    cid = await w1.group(owner, [bob])
    other = await w1.group(owner, [bob], title="other")
    (outcomes,) = await _removed_while_waiting(
        stack,
        db,
        cid,
        bob.id,
        lambda: store.append_many(
            [
                Append(cid, bob.id, "b1", "late"),
                Append(other, bob.id, "b2", "fine"),
                Append(cid, owner.id, "o1", "fine"),
            ]
        ),
    )
    late, fine, owners = outcomes
    assert isinstance(late, ChatdError) and late.code == Code.NOT_MEMBER, late
    assert not isinstance(fine, BaseException) and fine[0].seq == 1
    assert not isinstance(owners, BaseException) and owners[0].seq == 1
    assert await db.fetchval("SELECT count(*) FROM messages WHERE sender_id = $1", bob.id) == 1


@pytest.mark.parametrize("action", ["add", "remove"])
async def test_membership_change_by_a_concurrently_removed_member_is_refused(
    w1: Api, stack: Stack, db: asyncpg.Connection, action: str
) -> None:
    """The actor's own membership and role are read after the lock too: a removed member cannot
    add anyone (themselves included, which would undo the removal), nor a removed owner remove."""
    owner, bob, carol, dave = await w1.user(), await w1.user(), await w1.user(), await w1.user()
    cid = await w1.group(owner, [bob, carol])
    pool = await asyncpg.create_pool(stack.database_url, min_size=1, max_size=2)
    try:
        store = ConversationStore(pool)
        # bob, being removed, adds himself back and a friend; or the owner, being removed, removes
        # carol: as Messaging.add_members / remove_members do it, the rules decided on the facts
        # read under the lock.
        actor = bob.id if action == "add" else owner.id

        async def change() -> None:
            async with store.change_group(cid, actor) as group:
                if action == "add":
                    policy.may_change_members(group.facts)
                    await group.add([bob.id, dave.id])
                else:
                    policy.may_remove(group.facts, actor, [carol.id])
                    await group.remove([carol.id])

        (outcome,) = await _removed_while_waiting(stack, db, cid, actor, change)
    finally:
        await pool.close()
    assert isinstance(outcome, ChatdError) and outcome.code == Code.NOT_MEMBER, outcome
    members = await db.fetch("SELECT user_id FROM members WHERE conversation_id = $1", cid)
    assert {m["user_id"] for m in members} == {owner.id, bob.id, carol.id} - {actor}
    assert await db.fetchval("SELECT count(*) FROM messages WHERE conversation_id = $1", cid) == 0


async def test_no_message_of_a_removed_member_is_stored_after_the_removal(
    w1: Api, w2: Api, db: asyncpg.Connection
) -> None:
    owner, victim = await w1.user(), await w1.user()
    sockets = [await Ws.connect((w1, w2)[i % 2].base_url, victim.token) for i in range(4)]
    per_socket, late = 30, []

    async def stream(ws: Ws, cid: int, trial: int, index: int, acked: asyncio.Event) -> list[Frame]:
        refs = [f"t{trial}-{index}-{n}" for n in range(per_socket)]
        for ref in refs:
            frame = {"type": "send", "id": ref, "conversation_id": cid, "client_msg_id": ref, "body": ref}
            await ws.send_json(frame)
        replies = []
        for ref in refs:
            replies.append(await ws.expect(_answers(ref), timeout=30))
            if replies[-1]["type"] == "ack":
                acked.set()
        return replies

    for trial in range(20):
        cid = await w1.group(owner, [victim], title=f"t{trial}")
        acked = asyncio.Event()
        streams = [asyncio.ensure_future(stream(ws, cid, trial, i, acked)) for i, ws in enumerate(sockets)]
        await acked.wait()  # the sends are under way: remove the sender now
        removed = await w1.call("DELETE", f"/v1/conversations/{cid}/members/{victim.id}", owner.token)
        assert removed.status_code == 200, removed.text
        removal_seq = removed.json()["event"]["seq"]
        replies = [reply for replies in await asyncio.gather(*streams) for reply in replies]
        stored_after = await db.fetchval(
            "SELECT count(*) FROM messages WHERE conversation_id = $1 AND sender_id = $2 AND seq > $3",
            cid,
            victim.id,
            removal_seq,
        )
        acked_after = [r for r in replies if r["type"] == "ack" and r["seq"] > removal_seq]
        assert {r["code"] for r in replies if r["type"] == "error"} <= {"not_member"}
        assert len(acked_after) == stored_after
        if stored_after:
            late.append((trial, removal_seq, stored_after))
        seqs = [r["seq"] for r in await db.fetch("SELECT seq FROM messages WHERE conversation_id = $1", cid)]
        assert sorted(seqs) == list(range(1, len(seqs) + 1)), "seqs stay gapless"
    for ws in sockets:
        await ws.close()
    assert late == [], f"(trial, removal seq, messages stored after it): {late}"


async def test_logout_racing_auth_leaves_no_socket_alive(w1: Api, w2: Api) -> None:
    observer = await w1.user()

    async def trial(i: int, lead: float) -> str:
        """Auth on one worker, logout on the other, the logout `lead` seconds ahead."""
        api, other = (w1, w2) if i % 2 else (w2, w1)
        user = await api.user()
        ws = Ws(await websockets.connect(ws_url(other.base_url)))

        async def after(delay: float, action: Awaitable[Any]) -> Any:
            await asyncio.sleep(max(delay, 0))
            return await action

        auth = ws.send_json({"type": "auth", "token": user.token})
        logout = api.call("POST", "/v1/logout", user.token)
        _, out = await asyncio.gather(after(lead, auth), after(-lead, logout))
        assert out.status_code == 204
        try:
            first = await ws.expect(lambda f: f["type"] in ("ready", "error"))
            if first["type"] == "error":
                assert await ws.wait_closed() == 4001
                return "refused"
            await ws.expect(lambda f: f["type"] == "synced")
            # Barrier: a user-channel event published after the revoke. A socket that acted on
            # the revoke is closed before it; one that missed the revoke answers it.
            await api.direct(observer, user)
            await ws.expect(lambda f: f["type"] == "conversation_added")
        except ConnectionError:
            assert await ws.wait_closed() == 4001
            return "closed"
        await ws.close()
        return "alive"

    # A staircase keeps the logout near the auth's token check, where the race is: a refused
    # auth (logout first) moves the logout later, a closed socket (auth first) moves it earlier.
    lead, outcomes = 0.0, []
    for i in range(40):
        outcome = await trial(i, lead)
        outcomes.append(outcome)
        lead += -0.0003 if outcome == "refused" else 0.0003
    assert {"refused", "closed"} <= set(outcomes), f"the logout never met the auth: {outcomes}"
    alive = [i for i, outcome in enumerate(outcomes) if outcome == "alive"]
    assert alive == [], f"{len(alive)} of 40 sockets stayed open with a revoked token: {outcomes}"


def _deep(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


@pytest.mark.parametrize(
    "raw_id",
    [_deep(300), '"' + "x" * 65 + '"', "1.5", "true", "{}", "[1]", "-1", str(2**63)],
)
async def test_bad_id_is_refused_before_any_work(w1: Api, db: asyncpg.Connection, raw_id: str) -> None:
    alice, bob = await w1.user(), await w1.user()
    cid = await w1.direct(alice, bob)
    ws = await Ws.connect(w1.base_url, alice.token)
    cmid = uuid.uuid4().hex
    await ws.conn.send(
        f'{{"type":"send","id":{raw_id},"conversation_id":{cid},"client_msg_id":"{cmid}","body":"x"}}'
    )
    error = await ws.expect(lambda f: f["type"] in ("error", "ack"))
    assert (error["type"], error["code"], error["field"]) == ("error", "bad_request", "id"), error
    assert "ref" not in error
    await ws.send_json({"type": "ping", "id": 7})
    await ws.expect(lambda f: f["type"] == "pong")
    assert await db.fetchval("SELECT count(*) FROM messages WHERE client_msg_id = $1", cmid) == 0
    await ws.close()


@pytest.mark.parametrize("good_id", ["x" * 64, "", 0, 2**63 - 1, "é✓"])
async def test_documented_ids_are_echoed(w1: Api, good_id: Any) -> None:
    alice, bob = await w1.user(), await w1.user()
    cid = await w1.direct(alice, bob)
    ws = await Ws.connect(w1.base_url, alice.token)
    frame = {"type": "send", "id": good_id, "conversation_id": cid, "client_msg_id": "m1", "body": "x"}
    await ws.send_json(frame)
    ack = await ws.expect(lambda f: f["type"] in ("error", "ack"))
    assert (ack["type"], ack["ref"]) == ("ack", good_id)
    await ws.close()


async def test_many_unknown_since_entries_are_all_answered(w1: Api) -> None:
    user: User = await w1.user()
    unknown = {9_000_000 + n: 0 for n in range(2_500)}
    ws = await Ws.connect(w1.base_url, user.token, since=unknown, wait_synced=False)
    assert ws.ready["type"] == "ready"
    await ws.expect(lambda f: f["type"] == "synced", timeout=60)
    refused = [f["conversation_id"] for f in ws.frames if f["type"] == "error"]
    assert refused == sorted(unknown)
    assert {f["code"] for f in ws.frames if f["type"] == "error"} == {"not_member"}
    await ws.send_json({"type": "ping"})
    await ws.expect(lambda f: f["type"] == "pong")
    await ws.close()


@pytest.mark.parametrize("seq", ["0", str(2**63)])
async def test_readers_of_a_non_positive_seq_is_not_member(w1: Api, seq: str) -> None:
    alice, bob = await w1.user(), await w1.user()
    cid = await w1.group(alice, [bob])
    response = await w1.call("GET", f"/v1/conversations/{cid}/messages/{seq}/readers", alice.token)
    assert response.status_code == 403, response.text
    assert response.json()["error"]["code"] == "not_member"


async def test_invalid_utf8_is_logged_once_at_info_without_a_traceback(
    spawn_worker: Callable[..., Worker],
) -> None:
    worker = spawn_worker()
    api = Api(worker.url)
    ws = await Ws.connect(worker.url, (await api.user()).token)
    await ws.conn.send(b'{"type":"ping","x":"\xff"}', text=True)
    assert await ws.wait_closed() == 1007
    # Barrier: chatd logs "ws closed" after uvicorn has handled (and logged) the bad frame.
    for _ in range(200):
        if '"ws closed"' in worker.log.read_text():
            break
        await asyncio.sleep(0.05)
    lines = [orjson.loads(line) for line in worker.log.read_text().splitlines() if line.startswith("{")]
    utf8 = [line for line in lines if "UTF-8" in line["event"]]
    assert len(utf8) == 1, lines
    assert utf8[0]["level"] == "info" and "exc" not in utf8[0], utf8
    assert [line for line in lines if line["level"] in ("error", "critical")] == []
    await api.http.aclose()
