"""What a user does with their own account (issue 20): change the password (the other devices
are logged out, live), see and revoke devices, set a display name."""

from __future__ import annotations

import asyncpg
import orjson
import pytest
import redis.asyncio as aioredis

from chatd.devstack import Stack
from chatd.security import hash_token
from tests.admins import PASSWORD, login
from tests.helpers import Api, User, Ws

NEW_PASSWORD = "a new and longer password"


async def _me(api: Api, user: User) -> int:
    return (await api.call("GET", "/v1/me", user.token)).status_code


async def test_a_password_change_logs_out_every_other_device_while_connected(w1: Api, w2: Api) -> None:
    laptop = await w1.user()
    phone = await login(w2, laptop.name)  # (5 logins a minute per name in the tests: few here)
    friend = await w1.user()
    cid = await w1.direct(laptop, friend)
    sockets = {
        "laptop": await Ws.connect(w1.base_url, laptop.token),
        "phone": await Ws.connect(w2.base_url, phone.token),
        "phone2": await Ws.connect(w1.base_url, phone.token),
    }
    changed = await w2.call(
        "PUT", "/v1/me/password", laptop.token, {"current_password": PASSWORD, "new_password": NEW_PASSWORD}
    )
    assert changed.status_code == 200 and changed.json() == {"revoked_sessions": 1}, changed.text
    for name in ("phone", "phone2"):
        assert await sockets[name].wait_closed() == 4001, name
        assert sockets[name].conn.close_reason == "token revoked"
    # The device that changed it stays connected: a message sent after the change reaches it.
    friend_ws = await Ws.connect(w2.base_url, friend.token)
    assert (await friend_ws.send(cid, "still here?"))["type"] == "ack"
    await sockets["laptop"].expect(lambda f: f.get("body") == "still here?")
    assert [await _me(w1, u) for u in (laptop, phone)] == [200, 401]
    old = await w1.call("POST", "/v1/login", json={"username": laptop.name, "password": PASSWORD})
    assert old.status_code == 401, old.text
    await login(w2, laptop.name, NEW_PASSWORD)
    for ws in (sockets["laptop"], friend_ws):
        await ws.close()


async def test_a_wrong_current_password_changes_nothing(w1: Api, db: asyncpg.Connection) -> None:
    user = await w1.user()
    other = await login(w1, user.name)
    before = await db.fetchval("SELECT password_hash FROM users WHERE id = $1", user.id)
    for body in (
        {"current_password": "not my password", "new_password": NEW_PASSWORD},
        {"current_password": PASSWORD, "new_password": "short"},
        {"current_password": PASSWORD},
    ):
        response = await w1.call("PUT", "/v1/me/password", user.token, body)
        assert response.status_code in (400, 403), response.text
        field = response.json()["error"]["field"]
        assert field == ("current_password" if response.status_code == 403 else "new_password"), response.text
    assert await db.fetchval("SELECT password_hash FROM users WHERE id = $1", user.id) == before
    assert await _me(w1, other) == 200


async def test_devices_list_what_logged_in_and_from_where_as_nginx_saw_it(nginx: Api, w1: Api) -> None:
    user = await nginx.user()
    # A client cannot choose the address it is listed with: nginx replaces X-Forwarded-For.
    phone = await login(
        nginx, user.name, **{"user-agent": "chatd-test phone/1.0", "x-forwarded-for": "6.6.6.6"}
    )
    listed = await nginx.call("GET", "/v1/me/sessions", phone.token)
    assert listed.status_code == 200, listed.text
    sessions = listed.json()["sessions"]
    assert len(sessions) == 2
    first, second = sessions
    assert (first["current"], second["current"]) == (False, True)
    assert second["user_agent"] == "chatd-test phone/1.0" and second["address"] == "127.0.0.1"
    assert first["user_agent"].startswith("python-httpx")
    for entry in sessions:
        assert set(entry) == {"id", "created_at", "last_used_at", "user_agent", "address", "current"}
        assert entry["last_used_at"] >= entry["created_at"]
    # Another user's list is their own.
    other = await nginx.user()
    theirs = (await nginx.call("GET", "/v1/me/sessions", other.token)).json()["sessions"]
    assert [s["id"] for s in theirs if s["id"] in {first["id"], second["id"]}] == []


async def test_revoking_a_device_closes_its_sockets_and_only_its_own(w1: Api, w2: Api) -> None:
    user = await w1.user()
    phone = await login(w2, user.name)
    sessions = (await w1.call("GET", "/v1/me/sessions", user.token)).json()["sessions"]
    (phone_session,) = [s for s in sessions if not s["current"]]
    on_w1 = await Ws.connect(w1.base_url, phone.token)
    on_w2 = await Ws.connect(w2.base_url, phone.token)
    mine = await Ws.connect(w2.base_url, user.token)
    revoked = await w1.call("DELETE", f"/v1/me/sessions/{phone_session['id']}", user.token)
    assert revoked.status_code == 204, revoked.text
    assert [await on_w1.wait_closed(), await on_w2.wait_closed()] == [4001, 4001]
    assert await _me(w1, phone) == 401 and await _me(w1, user) == 200
    again = await w1.call("DELETE", f"/v1/me/sessions/{phone_session['id']}", user.token)
    assert again.status_code == 404 and again.json()["error"]["code"] == "not_found"
    await mine.send_json({"type": "ping", "id": "p"})
    await mine.expect(lambda f: f["type"] == "pong")
    await mine.close()


async def test_a_device_of_another_user_cannot_be_revoked(w1: Api) -> None:
    alice, bob = await w1.user(), await w1.user()
    (bobs,) = (await w1.call("GET", "/v1/me/sessions", bob.token)).json()["sessions"]
    for path_id in (bobs["id"], 0, 2**63):
        response = await w1.call("DELETE", f"/v1/me/sessions/{path_id}", alice.token)
        assert response.status_code == 404, response.text
    assert await _me(w1, bob) == 200


async def test_a_display_name_is_separate_from_the_username(w1: Api, db: asyncpg.Connection) -> None:
    alice, bob = await w1.user(), await w1.user()
    cid = await w1.direct(alice, bob)
    response = await w1.call("PUT", "/v1/me/profile", alice.token, {"display_name": "  Alice Liddell "})
    assert response.status_code == 200 and response.json() == {"display_name": "Alice Liddell"}, response.text
    me = (await w1.call("GET", "/v1/me", alice.token)).json()
    assert (me["username"], me["display_name"], me["admin"]) == (alice.name, "Alice Liddell", False)
    members = (await w1.call("GET", f"/v1/conversations/{cid}/members", bob.token)).json()["members"]
    shown = {m["username"]: (m["display_name"], m["deactivated"]) for m in members}
    assert shown == {alice.name: ("Alice Liddell", False), bob.name: (None, False)}
    cleared = await w1.call("PUT", "/v1/me/profile", alice.token, {"display_name": None})
    assert cleared.json() == {"display_name": None}
    assert await db.fetchval("SELECT display_name FROM users WHERE id = $1", alice.id) is None


@pytest.mark.parametrize("bad", ["x" * 65, "tab\tname", "nul\x00", 5, {}])
async def test_a_bad_display_name_is_refused(w1: Api, db: asyncpg.Connection, bad: object) -> None:
    user = await w1.user()
    response = await w1.call("PUT", "/v1/me/profile", user.token, {"display_name": bad})
    assert response.status_code == 400 and response.json()["error"]["field"] == "display_name", response.text
    assert await db.fetchval("SELECT display_name FROM users WHERE id = $1", user.id) is None


async def test_a_revoke_in_the_earlier_format_still_closes_the_socket(stack: Stack, w1: Api) -> None:
    """During a rolling upgrade a worker of the previous release publishes `{"token": hex}`."""
    user = await w1.user()
    ws = await Ws.connect(w1.base_url, user.token)
    redis = aioredis.from_url(stack.redis_url)
    try:
        notice = {"op": "revoke", "token": hash_token(user.token).hex()}
        await redis.publish(f"chatd:u:{user.id}", orjson.dumps(notice))
    finally:
        await redis.aclose()
    assert await ws.wait_closed() == 4001
