"""Admins (issue 20): made on the host with the CLI, the only ones the admin API answers,
never fewer than one, every action logged and counted."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg
import httpx
import pytest

from chatd.devstack import Stack
from tests.admins import PASSWORD, create_user_on_host, invite, login, make_admin
from tests.conftest import Isolated
from tests.helpers import Api, unique_name
from tests.test_metrics import scrape, total

# Every admin endpoint with a body that would change something if an admin sent it.
ADMIN_CALLS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/v1/admin/invites", None),
    ("POST", "/v1/admin/invites", {"max_uses": 5}),
    ("DELETE", "/v1/admin/invites/{invite}", None),
    ("GET", "/v1/admin/users", None),
    ("POST", "/v1/admin/users", {"username": "made-by-a-non-admin", "password": PASSWORD, "admin": True}),
    ("POST", "/v1/admin/users/{victim}/deactivate", None),
    ("POST", "/v1/admin/users/{victim}/reactivate", None),
    ("PUT", "/v1/admin/users/{victim}/password", {"password": "taken over by a non-admin"}),
    ("PUT", "/v1/admin/users/{victim}/admin", {"admin": True}),
    ("PUT", "/v1/admin/users/{caller}/admin", {"admin": True}),
]


async def _state(db: asyncpg.Connection) -> list[Any]:
    """Everything an admin call could change. Not `last_seen`: presence writes it when an
    earlier test's sockets close, which is not this call's doing."""
    users = await db.fetch("SELECT * FROM users ORDER BY id")
    return [
        [tuple(v for k, v in r.items() if k != "last_seen") for r in users],
        *[
            [tuple(r) for r in await db.fetch(f"SELECT * FROM {table} ORDER BY 1")]
            for table in ("invites", "tokens")
        ],
    ]


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_CALLS)
async def test_a_non_admin_gets_403_and_nothing_changes(
    w1: Api, db: asyncpg.Connection, method: str, path: str, body: dict[str, Any] | None
) -> None:
    admin = await make_admin(w1, db)
    caller, victim = await w1.user(), await w1.user()
    await invite(w1, admin)
    invite_id = await db.fetchval("SELECT id FROM invites WHERE created_by = $1", admin.id)
    if "reactivate" in path:
        assert (
            await w1.call("POST", f"/v1/admin/users/{victim.id}/deactivate", admin.token)
        ).status_code == 200
    before = await _state(db)
    url = path.format(invite=invite_id, victim=victim.id, caller=caller.id)
    response = await w1.call(method, url, caller.token, body)
    assert response.status_code == 403, response.text
    assert response.json()["error"]["code"] == "forbidden"
    assert await _state(db) == before
    # A bad body or target changes nothing in the answer: the admin check comes first.
    nonsense = await w1.call(method, url.replace(str(victim.id), "0"), caller.token, {"max_uses": "x"})
    assert nonsense.status_code == 403, nonsense.text
    # ... and no token at all is 401, as everywhere.
    assert (await w1.call(method, url, None, body)).status_code == 401


async def test_an_admin_cannot_deactivate_themselves(w1: Api, db: asyncpg.Connection) -> None:
    admin = await make_admin(w1, db)
    await make_admin(w1, db)  # not the last admin either
    response = await w1.call("POST", f"/v1/admin/users/{admin.id}/deactivate", admin.token)
    assert response.status_code == 409, response.text
    assert response.json()["error"]["code"] == "cannot_deactivate_self"
    assert await db.fetchval("SELECT deactivated_at FROM users WHERE id = $1", admin.id) is None
    assert (await w1.call("GET", "/v1/me", admin.token)).status_code == 200


async def test_the_last_admin_cannot_be_dropped(isolated: Isolated) -> None:
    api, db = isolated.api, isolated.db
    founder = unique_name("founder")
    made = create_user_on_host(isolated.env, founder)
    assert made.returncode == 0, made.stderr
    admin = await login(api, founder)
    dropped = await api.call("PUT", f"/v1/admin/users/{admin.id}/admin", admin.token, {"admin": False})
    assert dropped.status_code == 409 and dropped.json()["error"]["code"] == "last_admin", dropped.text
    assert await db.fetchval("SELECT is_admin FROM users WHERE id = $1", admin.id) is True
    # With a second admin, either may step down, but not both.
    second = await api.call(
        "POST",
        "/v1/admin/users",
        admin.token,
        {"username": unique_name("second"), "password": PASSWORD, "admin": True},
    )
    assert second.status_code == 201, second.text
    other = await login(api, second.json()["username"])
    assert (
        await api.call("PUT", f"/v1/admin/users/{admin.id}/admin", admin.token, {"admin": False})
    ).status_code == 200
    last = await api.call("PUT", f"/v1/admin/users/{other.id}/admin", other.token, {"admin": False})
    assert last.status_code == 409 and last.json()["error"]["code"] == "last_admin", last.text
    # The former admin is an admin no more: the admin API refuses them at once.
    assert (await api.call("GET", "/v1/admin/users", admin.token)).status_code == 403


async def test_two_admins_demoting_each_other_at_once_leave_one(isolated: Isolated) -> None:
    api, db = isolated.api, isolated.db
    founder = unique_name("founder")
    assert create_user_on_host(isolated.env, founder).returncode == 0
    first = await login(api, founder)
    for trial in range(10):
        name = unique_name(f"peer{trial}")
        made = await api.call(
            "POST", "/v1/admin/users", first.token, {"username": name, "password": PASSWORD, "admin": True}
        )
        assert made.status_code == 201, made.text
        second = await login(api, name)
        action = "admin" if trial % 2 else "deactivate"

        async def against(actor: Any, target: Any, action: str = action) -> httpx.Response:
            if action == "admin":
                return await api.call(
                    "PUT", f"/v1/admin/users/{target.id}/admin", actor.token, {"admin": False}
                )
            return await api.call("POST", f"/v1/admin/users/{target.id}/deactivate", actor.token)

        outcomes = await asyncio.gather(against(first, second), against(second, first))
        codes = sorted(r.status_code for r in outcomes)
        # The loser waited for the winner's lock and is no admin (403), or its token is gone
        # (401, deactivated), or it met the last admin (409).
        assert codes in ([200, 401], [200, 403], [200, 409]), [r.text for r in outcomes]
        admins = await db.fetch("SELECT id FROM users WHERE is_admin AND deactivated_at IS NULL")
        assert len(admins) == 1, (trial, [r.text for r in outcomes])
        first = first if admins[0]["id"] == first.id else second


async def test_the_first_admin_is_made_on_the_host(stack: Stack, w1: Api, db: asyncpg.Connection) -> None:
    name = unique_name("host")
    made = create_user_on_host(stack.env(), name)
    assert made.returncode == 0, made.stderr
    assert f"created {name}" in made.stdout and "an admin" in made.stdout
    audit = [json.loads(line) for line in made.stdout.splitlines() if line.startswith("{")]
    assert [(a["action"], a["target"], a["admin"]) for a in audit] == [("create_user", name, True)]
    admin = await login(w1, name)
    me = (await w1.call("GET", "/v1/me", admin.token)).json()
    assert me["admin"] is True
    again = create_user_on_host(stack.env(), name)
    assert again.returncode == 1 and "username_taken" in again.stderr
    short = create_user_on_host(stack.env(), unique_name("short"), password="short")
    assert short.returncode == 1 and "password" in short.stderr
    plain = create_user_on_host(stack.env(), unique_name("plain"), admin=False)
    assert plain.returncode == 0 and "a user" in plain.stdout


async def test_an_admin_creates_users_who_can_log_in(w1: Api, db: asyncpg.Connection) -> None:
    admin = await make_admin(w1, db)
    name = unique_name("made")
    response = await w1.call("POST", "/v1/admin/users", admin.token, {"username": name, "password": PASSWORD})
    assert response.status_code == 201, response.text
    assert response.json() == {"user_id": response.json()["user_id"], "username": name, "admin": False}
    assert (
        await w1.call("POST", "/v1/admin/users", admin.token, {"username": name, "password": PASSWORD})
    ).json()["error"]["code"] == "username_taken"
    user = await login(w1, name)
    listed = (
        await w1.call("GET", "/v1/admin/users", admin.token, params={"after": user.id - 1, "limit": 1})
    ).json()
    assert [(u["username"], u["admin"], u["deactivated"]) for u in listed["users"]] == [(name, False, False)]


async def test_an_admin_resets_a_password_and_the_user_is_logged_out_everywhere(
    w1: Api, w2: Api, db: asyncpg.Connection
) -> None:
    from tests.helpers import Ws

    admin = await make_admin(w1, db)
    user = await w1.user()
    ws = await Ws.connect(w2.base_url, user.token)
    reset = await w1.call(
        "PUT", f"/v1/admin/users/{user.id}/password", admin.token, {"password": "the new one!"}
    )
    assert reset.status_code == 200 and reset.json()["revoked_sessions"] == 1, reset.text
    assert await ws.wait_closed() == 4001
    await login(w1, user.name, "the new one!")
    short = await w1.call("PUT", f"/v1/admin/users/{user.id}/password", admin.token, {"password": "x"})
    assert short.status_code == 400 and short.json()["error"]["field"] == "password"
    ghost = await w1.call(
        "PUT", "/v1/admin/users/9223372036854775807/password", admin.token, {"password": "long enough"}
    )
    assert ghost.status_code == 404 and ghost.json()["error"]["code"] == "user_not_found"


async def test_every_admin_action_is_one_json_line_and_counted(
    stack: Stack, w1: Api, db: asyncpg.Connection
) -> None:
    admin = await make_admin(w1, db)
    user = await w1.user()
    before = scrape(stack, 0)
    calls = [
        ("POST", "/v1/admin/invites", {"max_uses": 2}, "create_invite"),
        ("POST", f"/v1/admin/users/{user.id}/deactivate", None, "deactivate"),
        ("POST", f"/v1/admin/users/{user.id}/reactivate", None, "reactivate"),
        ("PUT", f"/v1/admin/users/{user.id}/admin", {"admin": True}, "grant_admin"),
        ("PUT", f"/v1/admin/users/{user.id}/admin", {"admin": False}, "drop_admin"),
        ("PUT", f"/v1/admin/users/{user.id}/password", {"password": "reset by admin"}, "reset_password"),
    ]
    for method, path, body, _ in calls:
        assert (await w1.call(method, path, admin.token, body)).status_code in (200, 201)
    invite_id = await db.fetchval("SELECT id FROM invites WHERE created_by = $1", admin.id)
    assert (await w1.call("DELETE", f"/v1/admin/invites/{invite_id}", admin.token)).status_code == 200
    log = stack.root / "logs" / "worker-1.log"
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    mine = [
        line for line in lines if line.get("logger") == "chatd.admin" and line.get("actor_id") == admin.id
    ]
    assert [line["action"] for line in mine] == [c[3] for c in calls] + ["revoke_invite"]
    for line in mine:
        assert line["event"] == "admin action" and line["actor"] == admin.name
        if line["action"] not in ("create_invite", "revoke_invite"):
            assert (line["target_id"], line["target"]) == (user.id, user.name)
    after = scrape(stack, 0)
    for action in [c[3] for c in calls] + ["revoke_invite"]:
        moved = total(after, "chatd_admin_actions_total", action=action) - total(
            before, "chatd_admin_actions_total", action=action
        )
        assert moved == 1, action


async def test_ids_too_long_for_python_in_account_paths_get_not_found_and_no_traceback(
    w1: Api, db: asyncpg.Connection
) -> None:
    """As issue 19 item 17 for the conversation paths: a 5,000-digit id (over Python's int
    conversion limit) in a device, invite or user path is "no such ...", never a 500."""
    admin = await make_admin(w1, db)
    huge = "9" * 5000
    paths = [
        ("DELETE", f"/v1/me/sessions/{huge}", "not_found"),
        ("DELETE", f"/v1/admin/invites/{huge}", "not_found"),
        ("POST", f"/v1/admin/users/{huge}/deactivate", "user_not_found"),
        ("POST", f"/v1/admin/users/{huge}/reactivate", "user_not_found"),
        ("PUT", f"/v1/admin/users/{huge}/password", "user_not_found"),
        ("PUT", f"/v1/admin/users/{huge}/admin", "user_not_found"),
    ]
    for method, path, code in paths:
        response = await w1.call(method, path, admin.token, {"password": PASSWORD, "admin": True})
        assert response.status_code == 404, (method, path[:40], response.text[:200])
        assert response.json()["error"]["code"] == code
