"""Who may register (issue 20): the policy a worker announces, and invites with their uses
counted atomically."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import asyncpg
import pytest

from chatd.devstack import Stack
from tests.admins import PASSWORD, invite, make_admin, register
from tests.conftest import Worker
from tests.helpers import Api, unique_name


@pytest.fixture
async def inviting(spawn_worker: Callable[..., Worker]) -> AsyncIterator[Api]:
    """A worker with the daemon's default policy (the session's stack registers openly)."""
    api = Api(spawn_worker(CHATD_REGISTRATION="invite").url)
    yield api
    await api.http.aclose()


def _code(response: object) -> str:
    code: str = response.json()["error"]["code"]  # type: ignore[attr-defined]
    return code


async def _users_named(db: asyncpg.Connection, name: str) -> int:
    count: int = await db.fetchval("SELECT count(*) FROM users WHERE username = $1", name)
    return count


async def test_the_server_tells_clients_its_policy_without_a_token(
    inviting: Api, w1: Api, spawn_worker: Callable[..., Worker]
) -> None:
    assert (await inviting.call("GET", "/v1/server")).json() == {"registration": "invite"}
    assert (await w1.call("GET", "/v1/server")).json() == {"registration": "open"}
    closed = Api(spawn_worker(CHATD_REGISTRATION="closed").url)
    assert (await closed.call("GET", "/v1/server")).json() == {"registration": "closed"}
    await closed.http.aclose()


async def test_the_daemon_defaults_to_invites(stack: Stack, spawn_worker: Callable[..., Worker]) -> None:
    worker = spawn_worker(CHATD_REGISTRATION="")  # unset: the default
    api = Api(worker.url)
    assert (await api.call("GET", "/v1/server")).json() == {"registration": "invite"}
    response = await register(api)
    assert response.status_code == 403 and _code(response) == "invite_required", response.text
    await api.http.aclose()


async def test_closed_registration_refuses_everyone(
    spawn_worker: Callable[..., Worker], w1: Api, db: asyncpg.Connection
) -> None:
    closed = Api(spawn_worker(CHATD_REGISTRATION="closed").url)
    admin = await make_admin(w1, db)
    name = unique_name("closed")
    response = await register(closed, await invite(w1, admin), name=name)
    assert response.status_code == 403 and _code(response) == "registration_closed", response.text
    assert await _users_named(db, name) == 0
    await closed.http.aclose()


async def test_registering_without_an_invite_is_refused(inviting: Api, db: asyncpg.Connection) -> None:
    name = unique_name("noinvite")
    for body_invite in (None, ""):
        response = await register(inviting, body_invite, name=name)
        assert response.status_code == 403, response.text
        assert _code(response) == "invite_required" and response.json()["error"]["field"] == "invite"
    assert await _users_named(db, name) == 0


@pytest.mark.parametrize("how", ["forged", "expired", "used_up", "revoked"])
async def test_a_bad_invite_is_refused(inviting: Api, w1: Api, db: asyncpg.Connection, how: str) -> None:
    admin = await make_admin(w1, db)
    token = await invite(w1, admin, max_uses=1)
    if how == "forged":
        token = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    elif how == "expired":
        await db.execute(
            "UPDATE invites SET expires_at = now() - interval '1 second' WHERE created_by = $1", admin.id
        )
    elif how == "used_up":
        assert (await register(inviting, token)).status_code == 201
    else:
        invites = (await w1.call("GET", "/v1/admin/invites", admin.token)).json()["invites"]
        mine = [i for i in invites if i["created_by"] == admin.id]
        revoked = await w1.call("DELETE", f"/v1/admin/invites/{mine[0]['id']}", admin.token)
        assert revoked.status_code == 200 and revoked.json()["invite"]["state"] == "revoked", revoked.text
    name = unique_name(how)
    response = await register(inviting, token, name=name)
    assert response.status_code == 403, response.text
    assert _code(response) == "invalid_invite" and response.json()["error"]["field"] == "invite"
    assert await _users_named(db, name) == 0
    if how != "forged":
        used = await db.fetchval("SELECT uses FROM invites WHERE created_by = $1", admin.id)
        assert used == (1 if how == "used_up" else 0)


async def test_an_invite_lets_in_as_many_as_its_uses_and_records_who_came_by_it(
    inviting: Api, w1: Api, db: asyncpg.Connection
) -> None:
    admin = await make_admin(w1, db)
    token = await invite(w1, admin, max_uses=2, note="the team")
    names = [unique_name("inv") for _ in range(3)]
    codes = [(await register(inviting, token, name=name)).status_code for name in names]
    assert codes == [201, 201, 403]
    listed = (await w1.call("GET", "/v1/admin/invites", admin.token)).json()["invites"]
    (mine,) = [i for i in listed if i["created_by"] == admin.id]
    assert (mine["uses"], mine["max_uses"], mine["state"], mine["note"]) == (2, 2, "used_up", "the team")
    came = await db.fetch("SELECT username FROM users WHERE invite_id = $1 ORDER BY id", mine["id"])
    assert [row["username"] for row in came] == names[:2]
    # They log in like anyone.
    login = await inviting.call("POST", "/v1/login", json={"username": names[0], "password": PASSWORD})
    assert login.status_code == 200, login.text


async def test_a_taken_name_does_not_use_up_the_invite(
    inviting: Api, w1: Api, db: asyncpg.Connection
) -> None:
    admin = await make_admin(w1, db)
    token = await invite(w1, admin, max_uses=1)
    response = await register(inviting, token, name=admin.name)
    assert response.status_code == 409 and _code(response) == "username_taken", response.text
    assert await db.fetchval("SELECT uses FROM invites WHERE created_by = $1", admin.id) == 0
    assert (await register(inviting, token)).status_code == 201


async def test_two_registrations_racing_for_the_last_use_exactly_one_wins(
    stack: Stack, inviting: Api, w1: Api, db: asyncpg.Connection
) -> None:
    """Both pass the first look at the invite, then meet at its row lock (held here until both
    wait for it): the first to get it takes the last use, the other finds none left."""
    admin = await make_admin(w1, db)
    token = await invite(w1, admin, max_uses=2)
    assert (await register(inviting, token)).status_code == 201  # one use left
    holder = await asyncpg.connect(stack.database_url)
    watcher = await asyncpg.connect(stack.database_url)
    names = [unique_name("race"), unique_name("race")]
    try:
        async with holder.transaction():
            await holder.execute("SELECT 1 FROM invites WHERE created_by = $1 FOR UPDATE", admin.id)
            pid = await holder.fetchval("SELECT pg_backend_pid()")
            racers = [asyncio.ensure_future(register(inviting, token, name=name)) for name in names]
            async with asyncio.timeout(20):
                # The second waits behind the first (its tuple lock), not the holder itself.
                while (
                    await watcher.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE cardinality(pg_blocking_pids(pid)) > 0"
                        " AND query LIKE 'UPDATE invites SET uses%' AND pid <> $1",
                        pid,
                    )
                    < 2
                ):
                    assert not any(r.done() for r in racers), [r.result().text for r in racers if r.done()]
                    await asyncio.sleep(0.01)
        outcomes = await asyncio.gather(*racers)
    finally:
        await holder.close()
        await watcher.close()
    assert sorted(r.status_code for r in outcomes) == [201, 403], [r.text for r in outcomes]
    assert [_code(r) for r in outcomes if r.status_code == 403] == ["invalid_invite"]
    assert await db.fetchval("SELECT uses FROM invites WHERE created_by = $1", admin.id) == 2
    created = await db.fetchval("SELECT count(*) FROM users WHERE username = ANY($1::text[])", names)
    assert created == 1


async def test_many_registrations_at_once_never_exceed_the_uses(
    spawn_worker: Callable[..., Worker], inviting: Api, w1: Api, db: asyncpg.Connection
) -> None:
    admin = await make_admin(w1, db)
    token = await invite(w1, admin, max_uses=3)
    other = Api(spawn_worker(CHATD_REGISTRATION="invite").url)  # two workers share the uses
    outcomes = await asyncio.gather(*(register((inviting, other)[i % 2], token) for i in range(8)))
    await other.http.aclose()
    assert sorted(r.status_code for r in outcomes) == [201] * 3 + [403] * 5, [r.text for r in outcomes]
    assert await db.fetchval("SELECT uses FROM invites WHERE created_by = $1", admin.id) == 3


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"max_uses": 0}, "max_uses"),
        ({"max_uses": 1001}, "max_uses"),
        ({"max_uses": True}, "max_uses"),
        ({"max_uses": "2"}, "max_uses"),
        ({"expires_in_s": 59}, "expires_in_s"),
        ({"expires_in_s": 366 * 86400}, "expires_in_s"),
        ({"note": 5}, "note"),
        ({"note": "x" * 201}, "note"),
    ],
)
async def test_bad_invite_requests_are_refused_with_the_field(
    w1: Api, db: asyncpg.Connection, body: dict[str, object], field: str
) -> None:
    admin = await make_admin(w1, db)
    response = await w1.call("POST", "/v1/admin/invites", admin.token, body)
    assert response.status_code == 400 and response.json()["error"]["field"] == field, response.text
    assert await db.fetchval("SELECT count(*) FROM invites WHERE created_by = $1", admin.id) == 0


async def test_an_invite_token_is_shown_once_and_stored_hashed(w1: Api, db: asyncpg.Connection) -> None:
    admin = await make_admin(w1, db)
    response = await w1.call("POST", "/v1/admin/invites", admin.token, {"max_uses": 5, "expires_in_s": 3600})
    assert response.status_code == 201, response.text
    token, shown = response.json()["token"], response.json()["invite"]
    assert len(token) == 43 and shown["max_uses"] == 5 and shown["uses"] == 0 and shown["state"] == "active"
    assert shown["created_by"] == admin.id and shown["created_by_username"] == admin.name
    stored = await db.fetchval("SELECT token_hash FROM invites WHERE id = $1", shown["id"])
    assert token.encode() not in bytes(stored) and len(bytes(stored)) == 32
    listed = (await w1.call("GET", "/v1/admin/invites", admin.token)).text
    assert token not in listed
