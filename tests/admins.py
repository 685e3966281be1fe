"""Admins and invites for the tests (issue 20); the isolated deployment is conftest's `isolated`."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import asyncpg

from tests.helpers import Api, User, unique_name

PASSWORD = "correct horse battery"


def create_user_on_host(
    env: dict[str, str], name: str, password: str = PASSWORD, admin: bool = True
) -> subprocess.CompletedProcess[str]:
    """`chatd admin create-user` as an operator runs it on the server host (password on stdin)."""
    argv = [sys.executable, "-m", "chatd", "admin", "create-user", name, *(["--admin"] if admin else [])]
    return subprocess.run(argv, input=password + "\n", env=env, capture_output=True, text=True, timeout=60)


async def login(api: Api, name: str, password: str = PASSWORD, **headers: str) -> User:
    response = await api.call(
        "POST", "/v1/login", json={"username": name, "password": password}, headers=headers
    )
    assert response.status_code == 200, response.text
    return User(response.json()["user_id"], name, response.json()["token"])


async def make_admin(api: Api, db: asyncpg.Connection) -> User:
    """A registered user with the admin flag (the CLI's own path is tested on its own)."""
    user = await api.user("admin")
    await db.execute("UPDATE users SET is_admin = true WHERE id = $1", user.id)
    return user


async def invite(api: Api, admin: User, **body: Any) -> str:
    response = await api.call("POST", "/v1/admin/invites", admin.token, body)
    assert response.status_code == 201, response.text
    token: str = response.json()["token"]
    return token


async def register(api: Api, invite_token: str | None = None, name: str | None = None) -> Any:
    body: dict[str, Any] = {"username": name or unique_name("r"), "password": PASSWORD}
    if invite_token is not None:
        body["invite"] = invite_token
    return await api.call("POST", "/v1/register", json=body)
