"""Groups of 10,000+ members: adding in bulk and delivering to members on every worker."""

from __future__ import annotations

from collections.abc import Callable

import asyncpg

from chatd.security import hash_token, new_token
from tests.conftest import Worker
from tests.helpers import Api, User, Ws, unique_name


async def bulk_users(db: asyncpg.Connection, count: int) -> list[User]:
    """Users made in SQL (registering 10,000 through the KDF would only time argon2)."""
    prefix = unique_name("bulk")
    rows = await db.fetch(
        "INSERT INTO users (username, password_hash)"
        " SELECT $1 || '-' || n, '!' FROM generate_series(1, $2) AS n RETURNING id, username",
        prefix,
        count,
    )
    return [User(r["id"], r["username"], "") for r in rows]


async def test_ten_thousand_member_group(w1: Api, w2: Api, db: asyncpg.Connection) -> None:
    owner = await w1.user()
    members = await bulk_users(db, 10_000)
    cid = await w1.group(owner, [], title="everyone")
    for start in range(0, len(members), 2000):
        batch = [m.name for m in members[start : start + 2000]]
        body = {"usernames": batch}
        response = await w1.call("POST", f"/v1/conversations/{cid}/members", owner.token, body)
        assert response.status_code == 200, response.text
    conv = (await w1.call("GET", f"/v1/conversations/{cid}", owner.token)).json()
    assert conv["member_count"] == 10_001
    page = (await w1.call("GET", f"/v1/conversations/{cid}/members?limit=1000", owner.token)).json()
    assert len(page["members"]) == 1000
    # Log three members in (tokens minted the way login does) on both workers.
    sample = [members[0], members[4999], members[-1]]
    for user in sample:
        user.token = new_token()
        await db.execute(
            "INSERT INTO tokens (token_hash, user_id) VALUES ($1, $2)", hash_token(user.token), user.id
        )
    sockets = [await Ws.connect((w1, w2)[i % 2].base_url, u.token) for i, u in enumerate(sample)]
    o = await Ws.connect(w1.base_url, owner.token)
    ack = await o.send(cid, "hello, all ten thousand")
    assert ack["type"] == "ack"
    for ws in sockets:
        got = await ws.expect(lambda f: f["type"] == "message" and f["kind"] == "text")
        assert (got["seq"], got["body"]) == (ack["seq"], "hello, all ten thousand")
    for ws in [*sockets, o]:
        await ws.close()


async def test_group_size_limit(spawn_worker: Callable[..., Worker], db: asyncpg.Connection) -> None:
    worker = spawn_worker(CHATD_MAX_GROUP_MEMBERS="3")
    api = Api(worker.url)
    owner, a, b, c = [await api.user() for _ in range(4)]
    too_big = await api.call(
        "POST", "/v1/conversations/group", owner.token, {"title": "t", "usernames": [a.name, b.name, c.name]}
    )
    assert too_big.status_code == 409 and too_big.json()["error"]["code"] == "group_full"
    cid = await api.group(owner, [a, b])
    full = await api.call("POST", f"/v1/conversations/{cid}/members", owner.token, {"usernames": [c.name]})
    assert full.status_code == 409 and full.json()["error"]["code"] == "group_full"
    assert await db.fetchval("SELECT count(*) FROM members WHERE conversation_id = $1", cid) == 3
    await api.http.aclose()
