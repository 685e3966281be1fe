"""Deactivation (issue 20): at once and everywhere, through the path a logout takes; the user's
messages and memberships stay; reactivation restores login, not the old tokens."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable
from typing import Any

import asyncpg
import httpx
import websockets
from starlette.routing import Route

from chatd import http_api
from chatd.devstack import Stack
from tests.admins import PASSWORD, login, make_admin
from tests.helpers import Api, User, Ws, wait_until_blocked, ws_url

NO_TOKEN_NEEDED = {
    *("/healthz", "/readyz", "/v1/register", "/v1/login", "/v1/server", "/v1/push/key"),
    # nginx's internal location for a download chatd already authorized (X-Accel-Redirect):
    # a random key names the file, and nginx never lets a client ask for it directly.
    "/.chatd-files/{key:str}/{part:str}",
}


def authenticated_routes() -> list[tuple[str, str]]:
    """Every HTTP endpoint that takes a token, from the app's own route table."""
    from chatd import http_accounts, http_notify  # (inside: this module loads on code without them)

    found = []
    for route in [*http_api.routes, *http_accounts.routes, *http_notify.routes]:
        assert isinstance(route, Route)
        if route.path in NO_TOKEN_NEEDED:
            continue
        path = re.sub(r"\{[a-z_]+:(?:int|id)\}", "1", route.path)
        for method in sorted((route.methods or set()) - {"HEAD"}):
            found.append((method, path))
    return found


async def _deactivate(api: Api, admin: User, user: User) -> httpx.Response:
    return await api.call("POST", f"/v1/admin/users/{user.id}/deactivate", admin.token)


async def test_deactivation_closes_every_socket_on_every_worker_and_ends_every_token(
    w1: Api, w2: Api, db: asyncpg.Connection
) -> None:
    admin = await make_admin(w1, db)
    bob = await w1.user("bob")
    tokens = [bob, await login(w2, bob.name)]  # (5 logins a minute per name in the tests)
    alice = await w1.user("alice")
    cid = await w1.direct(alice, bob)
    bob_ws = await Ws.connect(w2.base_url, bob.token)
    assert (await bob_ws.send(cid, "before I leave"))["type"] == "ack"
    sockets = [await Ws.connect(api.base_url, token.token) for api in (w1, w2) for token in tokens]
    sockets.append(bob_ws)
    alice_ws = await Ws.connect(w1.base_url, alice.token)
    response = await _deactivate(w1, admin, bob)
    assert response.status_code == 200, response.text
    assert response.json()["revoked_sessions"] == 2
    assert response.json()["user"]["deactivated"] is True
    for ws in sockets:
        assert await ws.wait_closed(timeout=5) == 4001
        assert ws.conn.close_reason == "token revoked"
    for token in tokens:
        assert (await w2.call("GET", "/v1/me", token.token)).status_code == 401
    assert await db.fetchval("SELECT count(*) FROM tokens WHERE user_id = $1", bob.id) == 0
    # No new login: the right password says why, a wrong one says no more than ever.
    refused = await w2.call("POST", "/v1/login", json={"username": bob.name, "password": PASSWORD})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "account_deactivated"
    wrong = await w2.call("POST", "/v1/login", json={"username": bob.name, "password": "not the password"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_credentials"
    # Their messages stay, they stay a member for history, shown as deactivated.
    history = await w1.history(alice, cid)
    assert [m["body"] for m in history] == ["before I leave"]
    members = (await w1.call("GET", f"/v1/conversations/{cid}/members", alice.token)).json()["members"]
    assert {m["username"]: m["deactivated"] for m in members} == {alice.name: False, bob.name: True}
    # Their presence goes offline (a barrier: the event itself).
    await alice_ws.expect(
        lambda f: f["type"] == "presence" and f["user_id"] == bob.id and f["status"] == "offline"
    )
    # Sending to them still works; nothing reaches them (they have no socket), and after a
    # reactivation they log in again, with none of the old tokens.
    assert (await alice_ws.send(cid, "are you there?"))["type"] == "ack"
    back = await w2.call("POST", f"/v1/admin/users/{bob.id}/reactivate", admin.token)
    assert back.status_code == 200 and back.json()["user"]["deactivated"] is False, back.text
    for token in tokens:
        assert (await w1.call("GET", "/v1/me", token.token)).status_code == 401
    again = await login(w1, bob.name)
    returned = await Ws.connect(w1.base_url, again.token, since={cid: 1})
    assert [m["body"] for m in returned.messages(cid)] == ["are you there?"]
    for ws in (returned, alice_ws):
        await ws.close()


async def test_a_deactivated_users_token_is_refused_on_every_endpoint_and_the_websocket(
    w1: Api, w2: Api, db: asyncpg.Connection
) -> None:
    admin = await make_admin(w1, db)
    user = await w1.user()
    assert (await _deactivate(w2, admin, user)).status_code == 200
    routes = authenticated_routes()
    assert len(routes) >= 25, routes  # the table is read, not empty
    for method, path in routes:
        response = await w1.call(method, path, user.token, {})
        assert response.status_code == 401, (method, path, response.text)
        assert response.json()["error"]["code"] == "unauthorized"
    ws = await Ws.connect(w2.base_url, user.token, wait_synced=False)
    assert ws.ready == {"type": "error", "code": "unauthorized", "message": "invalid or revoked token"}
    assert await ws.wait_closed() == 4001


async def test_deactivation_racing_a_login_and_a_websocket_auth_leaves_nothing_alive(
    w1: Api, w2: Api, db: asyncpg.Connection
) -> None:
    """As logout racing auth (test_races): deactivate on one worker while, on the other, the
    user logs in and a socket authenticates with an existing token. Whatever the order, no
    socket stays open and no token works afterwards."""
    admin = await make_admin(w1, db)
    observer = await w1.user()

    async def after(delay: float, action: Awaitable[Any]) -> Any:
        await asyncio.sleep(max(delay, 0))
        return await action

    async def trial(i: int, lead: float) -> tuple[str, str]:
        here, there = (w1, w2) if i % 2 else (w2, w1)
        user = await here.user()
        ws = Ws(await websockets.connect(ws_url(there.base_url)))
        auth = ws.send_json({"type": "auth", "token": user.token})
        relogin = there.call("POST", "/v1/login", json={"username": user.name, "password": PASSWORD})
        deactivation = _deactivate(here, admin, user)
        _, logged_in, out = await asyncio.gather(
            after(lead, auth), after(lead, relogin), after(-lead, deactivation)
        )
        assert out.status_code == 200, out.text
        # A login that won the race got a token that the deactivation then revoked.
        assert logged_in.status_code in (200, 403), logged_in.text
        if logged_in.status_code == 200:
            assert (await there.call("GET", "/v1/me", logged_in.json()["token"])).status_code == 401
            login_outcome = "revoked"
        else:
            assert logged_in.json()["error"]["code"] == "account_deactivated"
            login_outcome = "refused"
        try:
            first = await ws.expect(lambda f: f["type"] in ("ready", "error"))
            if first["type"] == "error":
                assert await ws.wait_closed() == 4001
                return "refused", login_outcome
            await ws.expect(lambda f: f["type"] == "synced")
            # Barrier: a user-channel event published after the revoke (as for logout).
            await here.direct(observer, user)
            await ws.expect(lambda f: f["type"] == "conversation_added")
        except ConnectionError:
            assert await ws.wait_closed() == 4001
            return "closed", login_outcome
        await ws.close()
        return "alive", login_outcome

    lead, outcomes = 0.0, []
    for i in range(40):
        outcome = await trial(i, lead)
        outcomes.append(outcome)
        lead += -0.0003 if outcome[0] == "refused" else 0.0003
    sockets = [o[0] for o in outcomes]
    print("deactivation races (socket, login):", {o: outcomes.count(o) for o in set(outcomes)})
    assert {"refused", "closed"} <= set(sockets), f"the deactivation never met the auth: {outcomes}"
    alive = [i for i, o in enumerate(sockets) if o == "alive"]
    assert alive == [], f"{len(alive)} of 40 sockets stayed open for a deactivated user: {outcomes}"


async def test_a_login_waiting_on_the_users_row_is_refused_once_deactivation_commits(
    stack: Stack, w1: Api, db: asyncpg.Connection
) -> None:
    """The interleaving itself: the login's token insert waits for the deactivation's row lock
    and then finds the user deactivated (nothing stored), never a token the DELETE missed."""
    user = await w1.user()
    holder = await asyncpg.connect(stack.database_url)
    watcher = await asyncpg.connect(stack.database_url)
    try:
        async with holder.transaction():
            await holder.execute("UPDATE users SET deactivated_at = now() WHERE id = $1", user.id)
            await holder.execute("DELETE FROM tokens WHERE user_id = $1", user.id)
            pid = await holder.fetchval("SELECT pg_backend_pid()")
            relogin = asyncio.ensure_future(
                w1.call("POST", "/v1/login", json={"username": user.name, "password": PASSWORD})
            )
            await wait_until_blocked(watcher, pid, timeout=20)
        response = await relogin
    finally:
        await holder.close()
        await watcher.close()
    assert response.status_code == 403 and response.json()["error"]["code"] == "account_deactivated", (
        response.text
    )
    assert await db.fetchval("SELECT count(*) FROM tokens WHERE user_id = $1", user.id) == 0
