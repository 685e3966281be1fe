"""Edits and deletions (issue 21): sequenced events that refer to the original message, acked
after COMMIT, idempotent by client_msg_id, live and on catch-up, history shows the current
version, a deleted text is gone from Postgres, unread counts and receipts are not disturbed."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from tests.helpers import Api, Frame, Ws, sentinel


async def change(ws: Ws, kind: str, cid: int, seq: int, body: str | None = None, cmid: str = "") -> Frame:
    """Edit (with `body`) or delete the message at `seq`; the ack or error that answers it."""
    ref = uuid.uuid4().hex
    frame: dict[str, Any] = {
        "type": kind,
        "id": ref,
        "conversation_id": cid,
        "client_msg_id": cmid or uuid.uuid4().hex,
        "seq": seq,
    }
    if body is not None:
        frame["body"] = body
    await ws.send_json(frame)
    return await ws.expect(lambda f: f.get("ref") == ref)


async def edit(ws: Ws, cid: int, seq: int, body: str, cmid: str = "") -> Frame:
    return await change(ws, "edit", cid, seq, body, cmid)


async def delete(ws: Ws, cid: int, seq: int, cmid: str = "") -> Frame:
    return await change(ws, "delete", cid, seq, None, cmid)


async def test_edits_and_deletes_arrive_live_and_on_catch_up_in_seq_order(w1: Api, w2: Api) -> None:
    alice, bob = await w1.user(), await w1.user()
    cid = await w1.direct(alice, bob)
    a = await Ws.connect(w1.base_url, alice.token)
    b = await Ws.connect(w2.base_url, bob.token)  # live, on the other worker
    assert (await a.send(cid, "helo"))["seq"] == 1
    assert (await a.send(cid, "oops"))["seq"] == 2
    edited = await edit(a, cid, 1, "hello")
    assert edited["type"] == "ack" and edited["seq"] == 3 and not edited["duplicate"], edited
    deleted = await delete(a, cid, 2)
    assert deleted["type"] == "ack" and deleted["seq"] == 4 and not deleted["duplicate"], deleted

    live = await b.wait_seq(cid, 4)
    assert [f["seq"] for f in live] == [1, 2, 3, 4]
    assert (live[2]["kind"], live[2]["ref_seq"], live[2]["body"]) == ("edit", 1, "hello")
    assert live[2]["sender_id"] == alice.id and "edited_at" in live[2]
    assert (live[3]["kind"], live[3]["ref_seq"], live[3]["body"]) == ("delete", 2, "")
    assert live[2]["id"] == edited["message_id"] and live[3]["id"] == deleted["message_id"]

    # A device that was away catches up: the same events, in seq order, the originals as they
    # are now (edited, and a tombstone).
    late = await Ws.connect(w1.base_url, bob.token, since={cid: 0})
    caught = late.messages(cid)
    assert [(f["seq"], f["kind"]) for f in caught] == [(1, "text"), (2, "text"), (3, "edit"), (4, "delete")]
    assert caught[0]["body"] == "hello" and "edited_at" in caught[0]
    assert caught[1]["body"] == "" and "deleted_at" in caught[1]
    for ws in (a, b, late):
        await ws.close()


async def test_a_client_offline_during_edits_sees_only_the_current_version(
    w1: Api, db: asyncpg.Connection
) -> None:
    alice, bob = await w1.user(), await w1.user()
    cid = await w1.direct(alice, bob)
    a = await Ws.connect(w1.base_url, alice.token)
    marker = uuid.uuid4().hex
    assert (await a.send(cid, f"first draft {marker}"))["seq"] == 1
    assert (await edit(a, cid, 1, f"second draft {marker}"))["type"] == "ack"
    assert (await edit(a, cid, 1, "final"))["type"] == "ack"
    await a.close()

    history = await w1.history(bob, cid)
    assert [(m["seq"], m["kind"]) for m in history] == [(1, "text"), (2, "edit"), (3, "edit")]
    assert history[0]["body"] == "final" and history[0]["edited_at"] >= history[0]["created_at"]
    assert marker not in str(history), "an earlier version is in the history"
    assert all(m["body"] == "final" for m in history)
    stored = await db.fetchval(
        "SELECT count(*) FROM messages WHERE conversation_id = $1 AND body LIKE '%' || $2 || '%'", cid, marker
    )
    assert stored == 0, "an earlier version is still stored"


async def test_a_resent_edit_is_a_duplicate(w1: Api, w2: Api, db: asyncpg.Connection) -> None:
    alice, bob = await w1.user(), await w1.user()
    cid = await w1.direct(alice, bob)
    a1 = await Ws.connect(w1.base_url, alice.token)
    b = await Ws.connect(w1.base_url, bob.token)
    await a1.send(cid, "one")
    first = await edit(a1, cid, 1, "uno", cmid="edit-1")
    assert first["type"] == "ack" and not first["duplicate"]
    await a1.close()
    a2 = await Ws.connect(w2.base_url, alice.token)  # after a reconnect, on another worker
    again = await edit(a2, cid, 1, "uno", cmid="edit-1")
    assert again["type"] == "ack" and again["duplicate"], again
    assert (again["seq"], again["message_id"]) == (first["seq"], first["message_id"])
    # The same key for another change is refused, never taken as a duplicate.
    other = await delete(a2, cid, 1, cmid="edit-1")
    assert other["type"] == "error" and other["code"] == "client_msg_id_conflict", other
    send = await a2.send(cid, "a send under an edit's key", client_msg_id="edit-1")
    assert send["type"] == "error" and send["code"] == "client_msg_id_conflict", send
    assert await db.fetchval("SELECT count(*) FROM messages WHERE conversation_id = $1", cid) == 2
    await sentinel(a2, b, cid)
    assert [f["seq"] for f in b.messages(cid)] == [1, 2, 3], "the resend was delivered again"
    for ws in (a2, b):
        await ws.close()


async def test_only_the_author_edits_and_only_author_or_group_owner_deletes(w1: Api) -> None:
    owner, bob, carol = await w1.user(), await w1.user(), await w1.user()
    group = await w1.group(owner, [bob, carol])
    o, b, c = [await Ws.connect(w1.base_url, u.token) for u in (owner, bob, carol)]
    assert (await b.send(group, "bob's"))["seq"] == 1
    refused = await edit(c, group, 1, "carol's now")
    assert refused["type"] == "error" and refused["code"] == "forbidden", refused
    refused = await edit(o, group, 1, "the owner's now")  # owners delete, never edit others' words
    assert refused["type"] == "error" and refused["code"] == "forbidden", refused
    refused = await delete(c, group, 1)
    assert refused["type"] == "error" and refused["code"] == "forbidden", refused
    assert (await delete(o, group, 1))["type"] == "ack"
    gone = await edit(b, group, 1, "too late")
    assert gone["type"] == "error" and gone["code"] == "message_deleted", gone
    assert (await delete(b, group, 1))["code"] == "message_deleted"

    direct = await w1.direct(owner, bob)  # no owner in a direct conversation
    assert (await b.send(direct, "mine"))["type"] == "ack"
    refused = await delete(o, direct, 1)
    assert refused["type"] == "error" and refused["code"] == "forbidden", refused
    stranger = await w1.user()
    s = await Ws.connect(w1.base_url, stranger.token)
    assert (await delete(s, direct, 1))["code"] == "not_member"
    assert (await edit(s, direct, 1, "x"))["code"] == "not_member"
    for ws in (o, b, c, s):
        await ws.close()


async def test_an_edit_after_the_window_is_refused(w1: Api, db: asyncpg.Connection) -> None:
    alice, bob = await w1.user(), await w1.user()
    cid = await w1.direct(alice, bob)
    a = await Ws.connect(w1.base_url, alice.token)
    await a.send(cid, "old news")
    await a.send(cid, "fresh")
    # Sent two days ago (the default window, CHATD_EDIT_WINDOW_S, is one day).
    await db.execute(
        "UPDATE messages SET created_at = now() - interval '2 days' WHERE conversation_id = $1 AND seq = 1",
        cid,
    )
    late = await edit(a, cid, 1, "new news")
    assert late["type"] == "error" and late["code"] == "edit_window_closed", late
    assert late["window_s"] == 86400
    assert (await edit(a, cid, 2, "fresher"))["type"] == "ack"
    assert (await delete(a, cid, 1))["type"] == "ack", "deleting has no window"
    assert [m["body"] for m in await w1.history(alice, cid)][:2] == ["", "fresher"]
    await a.close()


async def test_bad_edits_and_deletes_get_clear_errors(w1: Api) -> None:
    alice, bob = await w1.user(), await w1.user()
    group = await w1.group(alice, [])
    await w1.call("POST", f"/v1/conversations/{group}/members", alice.token, {"usernames": [bob.name]})
    a = await Ws.connect(w1.base_url, alice.token)
    await a.send(group, "text")  # seq 2: seq 1 is the members_added event
    assert (await edit(a, group, 1, "x"))["code"] == "not_found"  # not a message
    assert (await edit(a, group, 99, "x"))["code"] == "not_found"
    assert (await delete(a, group, 99))["code"] == "not_found"
    blank = await edit(a, group, 2, "   ")
    assert (blank["code"], blank["field"]) == ("bad_request", "body")
    long = await edit(a, group, 2, "x" * 4001)
    assert long["code"] == "message_too_long"
    await a.send_json(
        {"type": "edit", "id": "e1", "conversation_id": group, "client_msg_id": "k", "body": "x"}
    )
    missing = await a.expect(lambda f: f.get("ref") == "e1")
    assert (missing["code"], missing["field"]) == ("bad_request", "seq")
    await a.send_json({"type": "delete", "id": "d1", "conversation_id": group, "seq": 2})
    missing = await a.expect(lambda f: f.get("ref") == "d1")
    assert (missing["code"], missing["field"]) == ("bad_request", "client_msg_id")
    # The connection is fine afterwards, and the message unchanged.
    assert (await edit(a, group, 2, "text, edited"))["type"] == "ack"
    await a.close()


async def test_a_deleted_text_is_gone_from_postgres(w1: Api, db: asyncpg.Connection) -> None:
    alice, bob = await w1.user(), await w1.user()
    cid = await w1.direct(alice, bob)
    a = await Ws.connect(w1.base_url, alice.token)
    marker = uuid.uuid4().hex
    await a.send(cid, f"secret {marker}")
    await edit(a, cid, 1, f"secret, edited {marker}")
    tables = [
        r["table_name"]
        for r in await db.fetch(
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
        )
    ]

    async def rows_with_marker() -> int:
        total = 0
        for table in tables:  # every column of every row, as text
            total += await db.fetchval(
                f'SELECT count(*) FROM "{table}" t WHERE t::text LIKE $1', f"%{marker}%"
            )
        return total

    assert await rows_with_marker() == 1  # the test finds it while it is there
    assert (await delete(a, cid, 1))["type"] == "ack"
    assert await rows_with_marker() == 0
    tombstone = (await w1.history(bob, cid))[0]
    assert tombstone["body"] == "" and "deleted_at" in tombstone and tombstone["kind"] == "text"
    await a.close()


async def test_edits_and_deletes_leave_unread_counts_and_receipts_alone(w1: Api, w2: Api) -> None:
    alice, bob, carol = await w1.user(), await w1.user(), await w1.user()
    group = await w1.group(alice, [bob, carol])
    a = await Ws.connect(w1.base_url, alice.token)
    b = await Ws.connect(w2.base_url, bob.token)
    assert (await b.send(group, "bob takes part"))["seq"] == 1  # his reads are counted (§4.9)
    for n in range(3):
        await a.send(group, f"m{n}")  # seqs 2, 3, 4
    assert (await b.read(group, 3))["last_read_seq"] == 3

    async def counts() -> list[tuple[int, int, int]]:
        reply = await w1.call("GET", f"/v1/conversations/{group}/receipts?from=1&to=20", alice.token)
        return [(c["seq"], c["read_by"], c["of"]) for c in reply.json()["counts"]]

    async def unread(user_token: str) -> int:
        ws = await Ws.connect(w1.base_url, user_token)
        (conv,) = [c for c in ws.ready["conversations"] if c["id"] == group]
        await ws.close()
        count: int = conv["unread"]
        return count

    before = (await counts(), await unread(bob.token), await unread(carol.token))
    assert before[1:] == (1, 4)
    assert (await edit(a, group, 2, "m0, edited"))["seq"] == 5
    assert (await delete(a, group, 4))["seq"] == 6
    assert (await delete(b, group, 1))["seq"] == 7
    assert (await edit(a, group, 3, "m1, edited"))["seq"] == 8
    await sentinel(a, b, group)  # seq 9: every change has reached bob
    assert await counts() == [*before[0], (9, 0, 2)]
    assert (await unread(bob.token), await unread(carol.token)) == (2, 5)  # the sentinel only
    assert (await b.read(group, 3))["last_read_seq"] == 3  # his pointer did not move
    assert not [f for f in b.frames if f["type"] == "read_state" and f["last_read_seq"] != 3]
    for ws in (a, b):
        await ws.close()
