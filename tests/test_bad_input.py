"""Every class of bad input gets its documented error code; nothing is stored; nothing crashes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import asyncpg
import httpx
import orjson
import pytest
import websockets

from chatd.devstack import Stack
from tests.conftest import Worker
from tests.helpers import Api, Ws, ws_url


async def message_count(db: asyncpg.Connection) -> int:
    count: int = await db.fetchval("SELECT count(*) FROM messages")
    return count


@pytest.mark.parametrize(
    ("frame", "code", "field"),
    [
        ("{not json", "bad_json", None),
        ("[1, 2]", "bad_json", None),
        ('{"type": "teleport"}', "unknown_type", None),
        ('{"no_type": 1}', "bad_request", "type"),
        ('{"type": "send", "client_msg_id": "a", "body": "x"}', "bad_request", "conversation_id"),
        (
            '{"type": "send", "conversation_id": "7", "client_msg_id": "a", "body": "x"}',
            "bad_request",
            "conversation_id",
        ),
        (
            '{"type": "send", "conversation_id": true, "client_msg_id": "a", "body": "x"}',
            "bad_request",
            "conversation_id",
        ),
        (
            '{"type": "send", "conversation_id": -3, "client_msg_id": "a", "body": "x"}',
            "bad_request",
            "conversation_id",
        ),
        ('{"type": "send", "conversation_id": 1, "body": "x"}', "bad_request", "client_msg_id"),
        (
            '{"type": "send", "conversation_id": 1, "client_msg_id": "has space", "body": "x"}',
            "bad_request",
            "client_msg_id",
        ),
        ('{"type": "send", "conversation_id": 1, "client_msg_id": "a", "body": 5}', "bad_request", "body"),
        (
            '{"type": "send", "conversation_id": 1, "client_msg_id": "a", "body": "   "}',
            "bad_request",
            "body",
        ),
        (
            '{"type": "send", "conversation_id": 1, "client_msg_id": "a", "body": "nul \\u0000 inside"}',
            "bad_request",
            "body",
        ),
        ('{"type": "auth", "token": "again"}', "bad_request", None),
    ],
)
async def test_bad_frames_get_error_codes_and_store_nothing(
    w1: Api, db: asyncpg.Connection, frame: str, code: str, field: str | None
) -> None:
    user = await w1.user()
    ws = await Ws.connect(w1.base_url, user.token)
    before = await message_count(db)
    await ws.conn.send(frame)
    error = await ws.expect(lambda f: f["type"] == "error")
    assert error["code"] == code
    if field:
        assert error["field"] == field
    # The connection survives and still answers.
    await ws.send_json({"type": "ping"})
    await ws.expect(lambda f: f["type"] == "pong")
    assert await message_count(db) == before
    await ws.close()


async def test_binary_frame_is_rejected(w1: Api) -> None:
    ws = await Ws.connect(w1.base_url, (await w1.user()).token)
    await ws.conn.send(b'{"type": "ping"}')
    assert (await ws.expect(lambda f: f["type"] == "error"))["code"] == "bad_json"
    await ws.close()


async def test_error_echoes_request_id(w1: Api) -> None:
    ws = await Ws.connect(w1.base_url, (await w1.user()).token)
    await ws.send_json(
        {"type": "send", "id": "req-7", "conversation_id": 999999999, "client_msg_id": "z", "body": "x"}
    )
    error = await ws.expect(lambda f: f["type"] == "error")
    assert (error["code"], error["ref"]) == ("not_member", "req-7")
    await ws.close()


async def test_oversized_frame_closes_with_1009(w1: Api, db: asyncpg.Connection) -> None:
    alice, bob = await w1.user(), await w1.user()
    cid = await w1.direct(alice, bob)
    ws = await Ws.connect(w1.base_url, alice.token)
    before = await message_count(db)
    await ws.send_json({"type": "send", "conversation_id": cid, "client_msg_id": "big", "body": "x" * 70_000})
    assert await ws.wait_closed() == 1009
    assert await message_count(db) == before


async def test_message_longer_than_limit_is_rejected(w1: Api, db: asyncpg.Connection) -> None:
    alice, bob = await w1.user(), await w1.user()
    cid = await w1.direct(alice, bob)
    ws = await Ws.connect(w1.base_url, alice.token)
    error = await ws.send(cid, "y" * 4001)
    assert error["code"] == "message_too_long"
    assert await db.fetchval("SELECT count(*) FROM messages WHERE conversation_id = $1", cid) == 0
    await ws.close()


async def test_bad_token_and_non_auth_first_frame_close_4001(w1: Api) -> None:
    async with websockets.connect(ws_url(w1.base_url)) as conn:
        await conn.send('{"type": "auth", "token": "not-a-real-token"}')
        assert '"unauthorized"' in await conn.recv()
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await conn.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4001
    async with websockets.connect(ws_url(w1.base_url)) as conn:
        await conn.send('{"type": "ping"}')
        assert '"unauthorized"' in await conn.recv()
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await conn.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4001


async def test_silent_client_is_closed_after_auth_timeout(w1: Api) -> None:
    async with websockets.connect(ws_url(w1.base_url)) as conn:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(conn.recv(), 10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4002


async def test_revoked_token_is_refused_everywhere(w1: Api, w2: Api) -> None:
    alice = await w1.user()
    live = await Ws.connect(w2.base_url, alice.token)  # on the other worker
    assert (await w1.call("GET", "/v1/me", alice.token)).status_code == 200
    assert (await w1.call("POST", "/v1/logout", alice.token)).status_code == 204
    assert await live.wait_closed() == 4001
    response = await w1.call("GET", "/v1/me", alice.token)
    assert response.status_code == 401 and response.json()["error"]["code"] == "unauthorized"
    ws = await Ws.connect(w2.base_url, alice.token)
    assert ws.ready["code"] == "unauthorized"


async def test_flood_is_rate_limited_and_not_stored(
    stack: Stack, spawn_worker: Callable[..., Worker], db: asyncpg.Connection
) -> None:
    worker = spawn_worker(CHATD_RATE_LIMIT_MESSAGES="5", CHATD_RATE_LIMIT_WINDOW_S="60")
    api = Api(worker.url)
    alice, bob = await api.user(), await api.user()
    cid = await api.direct(alice, bob)
    ws = await Ws.connect(worker.url, alice.token)
    results = [await ws.send(cid, f"m{i}") for i in range(8)]
    assert [r["type"] for r in results] == ["ack"] * 5 + ["error"] * 3
    assert all(r["code"] == "rate_limited" and r["retry_after_ms"] > 0 for r in results[5:])
    assert await db.fetchval("SELECT count(*) FROM messages WHERE conversation_id = $1", cid) == 5
    await ws.close()
    await api.http.aclose()


async def test_http_bad_input(w1: Api) -> None:
    async def error(method: str, path: str, status: int, code: str, **kw: object) -> None:
        response = await w1.http.request(method, path, **kw)  # type: ignore[arg-type]
        assert response.status_code == status, response.text
        assert response.json()["error"]["code"] == code

    await error("POST", "/v1/register", 400, "bad_json", content=b"{nope")
    await error("POST", "/v1/register", 400, "bad_request", json={"username": "abc"})
    await error("POST", "/v1/register", 400, "bad_request", json={"username": 5, "password": "x" * 10})
    await error(
        "POST", "/v1/register", 400, "bad_request", json={"username": "no spaces!", "password": "x" * 10}
    )
    await error("POST", "/v1/register", 400, "bad_request", json={"username": "shortpw", "password": "x"})
    await error("POST", "/v1/register", 413, "too_large", content=b"{" + b" " * 70_000 + b"}")

    async def chunked_body() -> AsyncIterator[bytes]:  # no Content-Length: the stream is capped
        for _ in range(100):
            yield b" " * 1000

    await error("POST", "/v1/register", 413, "too_large", content=chunked_body())
    await error(
        "POST",
        "/v1/login",
        401,
        "invalid_credentials",
        json={"username": "nobody-here", "password": "whatever1"},
    )
    await error("GET", "/v1/conversations", 401, "unauthorized")
    await error("GET", "/v1/conversations", 401, "unauthorized", headers={"authorization": "Bearer nope"})
    await error("GET", "/v1/nothing-here", 404, "not_found")
    await error("DELETE", "/v1/register", 405, "method_not_allowed")
    user = await w1.user()
    auth = {"authorization": f"Bearer {user.token}"}
    await error(
        "POST", "/v1/register", 409, "username_taken", json={"username": user.name, "password": "x" * 10}
    )
    await error(
        "POST",
        "/v1/conversations/group",
        400,
        "bad_request",
        headers=auth,
        json={"title": "t", "user_ids": ["1"]},
    )
    await error("POST", "/v1/conversations/group", 400, "bad_request", headers=auth, json={"title": ""})
    for nul in ({"title": "a\x00b"}, {"title": "t", "usernames": ["a\x00b"]}):
        await error("POST", "/v1/conversations/group", 400, "bad_request", headers=auth, json=nul)
    await error(
        "POST", "/v1/register", 400, "bad_request", json={"username": "nul", "password": "pass\x00word"}
    )
    await error(
        "POST",
        "/v1/conversations/group",
        404,
        "user_not_found",
        headers=auth,
        json={"title": "t", "user_ids": [10**12]},
    )
    await error(
        "POST",
        "/v1/conversations/direct",
        404,
        "user_not_found",
        headers=auth,
        json={"username": "ghost-user"},
    )
    await error(
        "POST", "/v1/conversations/direct", 400, "bad_request", headers=auth, json={"user_id": user.id}
    )
    await error("GET", "/v1/conversations/1/messages?limit=abc", 400, "bad_request", headers=auth)
    await error("GET", "/v1/conversations/1/messages?before=-1", 400, "bad_request", headers=auth)


async def test_workers_survive_the_barrage(stack: Stack) -> None:
    for index in range(stack.workers):
        assert httpx.get(f"{stack.worker_url(index)}/readyz").status_code == 200


@pytest.mark.parametrize(
    "since",
    [{"²": 1}, {"\u0661": 1}, {"1": 2**63}, {"1": -1}, {"1": "3"}, {"0": 1}, {str(2**63): 1}],
)
async def test_bad_since_is_rejected_before_anything_else(w1: Api, since: dict[str, object]) -> None:
    user = await w1.user()
    async with websockets.connect(ws_url(w1.base_url)) as conn:
        await conn.send(orjson.dumps({"type": "auth", "token": user.token, "since": since}).decode())
        reply = orjson.loads(await conn.recv())
        assert (reply["type"], reply["code"], reply["field"]) == ("error", "bad_request", "since")


async def test_since_beyond_the_end_is_clamped_to_the_end(w1: Api) -> None:
    alice, bob = await w1.user(), await w1.user()
    cid = await w1.direct(alice, bob)
    a = await Ws.connect(w1.base_url, alice.token)
    await a.send(cid, "one")
    b = await Ws.connect(w1.base_url, bob.token, since={cid: 50})
    assert b.messages(cid) == []
    ack = await a.send(cid, "two")
    assert (await b.expect(lambda f: f["type"] == "message"))["seq"] == ack["seq"] == 2
    await a.close()
    await b.close()


async def test_http_rejects_out_of_range_ids_and_non_ascii_digits(w1: Api) -> None:
    user = await w1.user()
    big = await w1.call("POST", "/v1/conversations/group", user.token, {"title": "t", "user_ids": [2**63]})
    assert big.status_code == 400 and big.json()["error"]["code"] == "bad_request"
    negative = await w1.call("POST", "/v1/conversations/group", user.token, {"title": "t", "user_ids": [-4]})
    assert negative.status_code == 400
    for query in ("limit=²", "before=\u0661", f"after={2**63}"):
        response = await w1.call("GET", f"/v1/conversations/1/messages?{query}", user.token)
        assert response.status_code == 400, query
        assert response.json()["error"]["code"] == "bad_request"
    broken = await w1.http.post("/v1/register", content=b'{"username": "\xff\xfe", "password": "x"}')
    assert broken.status_code == 400 and broken.json()["error"]["code"] == "bad_json"


async def test_login_limit_is_per_client_address(spawn_worker: Callable[..., Worker]) -> None:
    worker = spawn_worker(CHATD_LOGIN_RATE_LIMIT="3")
    api = Api(worker.url)
    user = await api.user()
    wrong = {"username": user.name, "password": "not the password"}
    attacker = {"x-forwarded-for": "192.0.2.7"}
    codes = [(await api.http.post("/v1/login", json=wrong, headers=attacker)).status_code for _ in range(5)]
    assert codes == [401, 401, 401, 429, 429]
    owner = await api.http.post(
        "/v1/login",
        json={"username": user.name, "password": "correct horse battery"},
        headers={"x-forwarded-for": "198.51.100.4"},
    )
    assert owner.status_code == 200, "an attacker elsewhere cannot lock the user out"
    await api.http.aclose()


async def test_login_limit_behind_nginx_cannot_be_dodged_with_a_forged_header(nginx: Api) -> None:
    user = await nginx.user()
    wrong = {"username": user.name, "password": "not the password"}
    codes = []
    for i in range(7):  # a new forged address every time: nginx overwrites it
        forged = {"x-forwarded-for": f"203.0.113.{i}"}
        codes.append((await nginx.http.post("/v1/login", json=wrong, headers=forged)).status_code)
    assert codes == [401] * 4 + [429] * 3  # 5 attempts a minute, counting the sign-up login
    # A client at another real address is not locked out.
    elsewhere = httpx.AsyncClient(
        base_url=nginx.base_url, transport=httpx.AsyncHTTPTransport(local_address="127.0.0.2")
    )
    right = {"username": user.name, "password": "correct horse battery"}
    assert (await elsewhere.post("/v1/login", json=right)).status_code == 200
    await elsewhere.aclose()
