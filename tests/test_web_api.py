"""What a web client needs from the API (issue 11): user lookup, read state over HTTP, CORS,
the WebSocket Origin check and ephemeral typing."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
import websockets

from chatd.config import ConfigError, Settings
from tests.conftest import Worker
from tests.helpers import Api, Ws, ack_for, ws_url


async def test_find_user_by_username(nginx: Api, spawn_worker: Callable[..., Worker]) -> None:
    me, other = await nginx.user(), await nginx.user()
    found = await nginx.call("GET", "/v1/users", me.token, params={"username": f"  {other.name.upper()} "})
    assert found.status_code == 200 and found.json() == {"user_id": other.id, "username": other.name}
    # Nothing was created: no conversation, so no presence either (protocol.md §4.9).
    listed = await nginx.call("GET", "/v1/conversations", me.token)
    assert listed.json()["conversations"] == []
    missing = await nginx.call(
        "GET", "/v1/users", me.token, params={"username": "nobody-" + uuid.uuid4().hex[:8]}
    )
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "user_not_found"
    bad = await nginx.call("GET", "/v1/users", me.token)
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "username"
    assert (await nginx.call("GET", "/v1/users", params={"username": other.name})).status_code == 401

    # Misses count against CHATD_USER_LOOKUP_RATE_LIMIT like any other naming of users.
    worker = spawn_worker(CHATD_USER_LOOKUP_RATE_LIMIT="3")
    api = Api(worker.url)
    me = await api.user()  # a fresh count (the counter is per user, in Redis)
    statuses = []
    for _ in range(4):
        name = "nobody-" + uuid.uuid4().hex[:8]
        statuses.append((await api.call("GET", "/v1/users", me.token, params={"username": name})).status_code)
    assert statuses == [404, 404, 404, 429]
    limited = await api.call("GET", "/v1/users", me.token, params={"username": other.name})
    assert limited.status_code == 429 and "retry_after_ms" in limited.json()["error"]
    await api.http.aclose()


async def test_read_state_over_http(nginx: Api) -> None:
    alice, bob = await nginx.user(), await nginx.user()
    cid = await nginx.direct(alice, bob)
    ws = await Ws.connect(nginx.base_url, alice.token)
    for text in ("one", "two", "three"):
        assert (await ws.send(cid, text))["type"] == "ack"
    reader = await Ws.connect(nginx.base_url, bob.token)
    assert (await reader.read(cid, 1))["last_read_seq"] == 1
    state = await nginx.call("GET", "/v1/me/read_state", bob.token)
    assert state.status_code == 200
    assert state.json() == {"conversations": [{"conversation_id": cid, "last_read_seq": 1, "unread": 2}]}
    # The same numbers `ready` gives on connect.
    again = await Ws.connect(nginx.base_url, bob.token)
    (conv,) = again.ready["conversations"]
    assert (conv["last_read_seq"], conv["unread"]) == (1, 2)
    assert (await nginx.call("GET", "/v1/me/read_state")).status_code == 401
    for sock in (ws, reader, again):
        await sock.close()


def test_allowed_origins_setting() -> None:
    base = {"CHATD_DATABASE_URL": "postgresql://x/y"}
    assert Settings.from_env(base).allowed_origins == ()
    listed = Settings.from_env(
        {**base, "CHATD_ALLOWED_ORIGINS": "https://Chat.Example.org, http://localhost:3000,"}
    )
    assert listed.allowed_origins == ("https://chat.example.org", "http://localhost:3000")
    for bad in ("chat.example.org", "https://chat.example.org/app", "ftp://x", "*"):
        with pytest.raises(ConfigError, match="CHATD_ALLOWED_ORIGINS"):
            Settings.from_env({**base, "CHATD_ALLOWED_ORIGINS": bad})


async def test_cors_only_for_allowed_origins(nginx: Api, spawn_worker: Callable[..., Worker]) -> None:
    preflight = {
        "Origin": "https://app.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    refused = await nginx.call("OPTIONS", "/v1/conversations/group", headers=preflight)
    assert refused.status_code == 405 and "access-control-allow-origin" not in refused.headers

    worker = spawn_worker(CHATD_ALLOWED_ORIGINS="https://app.example, http://localhost:3000")
    api = Api(worker.url)
    allowed = await api.call("OPTIONS", "/v1/conversations/group", headers=preflight)
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    assert "DELETE" in allowed.headers["access-control-allow-methods"]
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    other = await api.call("OPTIONS", "/v1/me", headers={**preflight, "Origin": "https://evil.example"})
    assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
    user = await api.user()
    me = await api.call("GET", "/v1/me", user.token, headers={"Origin": "http://localhost:3000"})
    assert me.status_code == 200 and me.headers["access-control-allow-origin"] == "http://localhost:3000"
    health = await api.call("GET", "/healthz", headers={"Origin": "https://app.example"})
    assert "access-control-allow-origin" not in health.headers  # CORS is for /v1/ only
    await api.http.aclose()


async def test_websocket_origin_check(nginx: Api, spawn_worker: Callable[..., Worker]) -> None:
    user = await nginx.user()
    host = nginx.base_url.removeprefix("http://")
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(ws_url(nginx.base_url), origin="https://evil.example")  # type: ignore[arg-type]
    assert refused.value.response.status_code == 403
    # Same origin through nginx (the Host the browser sent, port included), and no Origin at all.
    for origin in (f"http://{host}", None):
        conn = await websockets.connect(ws_url(nginx.base_url), origin=origin)  # type: ignore[arg-type]
        ws = Ws(conn)
        await ws.send_json({"type": "auth", "token": user.token})
        assert (await ws.expect(lambda f: True))["type"] == "ready"
        await ws.close()
    worker = spawn_worker(CHATD_ALLOWED_ORIGINS="https://app.example")
    conn = await websockets.connect(ws_url(worker.url), origin="https://app.example")  # type: ignore[arg-type]
    await conn.close()
    with pytest.raises(websockets.InvalidStatus):
        await websockets.connect(ws_url(worker.url), origin="https://evil.example")  # type: ignore[arg-type]


async def test_typing_is_relayed_to_members_never_stored(nginx: Api) -> None:
    alice, bob, stranger = await nginx.user(), await nginx.user(), await nginx.user()
    cid = await nginx.direct(alice, bob)
    a = await Ws.connect(nginx.base_url, alice.token)
    b = await Ws.connect(nginx.base_url, bob.token)
    s = await Ws.connect(nginx.base_url, stranger.token)
    await a.send_json({"type": "typing", "conversation_id": cid})
    await a.send_json({"type": "typing", "conversation_id": cid})  # within a second: dropped
    # Barrier: a message sent after both typing frames; every typing relayed comes before it.
    assert (await a.send(cid, "sentinel"))["type"] == "ack"
    await b.expect(lambda f: f["type"] == "message" and f["body"] == "sentinel")
    typing = [f for f in b.frames if f["type"] == "typing"]
    assert typing == [{"type": "typing", "conversation_id": cid, "user_id": alice.id}]
    assert [f for f in a.frames if f["type"] == "typing"] == typing  # own connections too

    await s.send_json({"type": "typing", "id": "t1", "conversation_id": cid})
    refused = await s.expect(lambda f: f.get("ref") == "t1")
    assert refused["code"] == "not_member"
    await s.send_json({"type": "typing", "id": "t2", "conversation_id": "x"})
    assert (await s.expect(lambda f: f.get("ref") == "t2"))["field"] == "conversation_id"
    await s.send_json({"type": "ping", "id": "p"})
    await s.expect(lambda f: f["type"] == "pong")
    assert not [f for f in s.frames if f["type"] == "typing"]

    history = await nginx.history(alice, cid)
    assert [m["body"] for m in history] == ["sentinel"]
    cmid = uuid.uuid4().hex
    await a.send_json({"type": "send", "conversation_id": cid, "client_msg_id": cmid, "body": "x"})
    await a.expect(ack_for(cmid))
    for ws in (a, b, s):
        await ws.close()


async def test_ready_tells_the_message_length_limit(nginx: Api, spawn_worker: Callable[..., Worker]) -> None:
    """So a client can show the limit while the message is typed (issue 19, item 6)."""
    user = await nginx.user()
    ws = await Ws.connect(nginx.base_url, user.token)
    assert ws.ready["limits"] == {"max_message_chars": 4000, "edit_window_s": 86400}
    await ws.close()
    worker = spawn_worker(CHATD_MAX_MESSAGE_CHARS="120", CHATD_EDIT_WINDOW_S="600")
    ws = await Ws.connect(worker.url, user.token)
    assert ws.ready["limits"] == {"max_message_chars": 120, "edit_window_s": 600}
    refused = await ws.send(1, "x" * 121)
    assert refused["code"] == "message_too_long"
    await ws.close()
