"""The shipped nginx site (nginx/chatd.conf.j2) at the edge: version hidden, per-address limits.

The session's nginx runs the local stack's permissive limits (every test client is 127.0.0.1);
the limit tests start a second nginx from the same template, with strict values, in front of
the session's workers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import stat
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import websockets

from chatd.devstack import STATE, Stack
from chatd.processes import free_port
from tests.helpers import Api, unique_name, ws_url


def _edge_stack(stack: Stack, **limits: object) -> Stack:
    root = Path(tempfile.mkdtemp(prefix="chatd-edge-"))
    for sub in ("logs", "nginx/tmp"):
        (root / sub).mkdir(parents=True)
    root.chmod(0o755)
    (root / "nginx/tmp").chmod(0o777)
    other = dataclasses.replace(stack, root=root, http_port=free_port(), pids={}, **limits)  # type: ignore[arg-type]
    other.start_nginx()
    return other


def _edge_down(other: Stack) -> None:
    other.down()
    shutil.rmtree(other.root, ignore_errors=True)


@asynccontextmanager
async def edge(stack: Stack, **limits: object) -> AsyncIterator[str]:
    """Another nginx from the production template, with `limits`, in front of the same workers."""
    other = await asyncio.to_thread(_edge_stack, stack, **limits)
    try:
        yield other.url
    finally:
        await asyncio.to_thread(_edge_down, other)


async def test_nginx_does_not_show_its_version(nginx: Api) -> None:
    proxied = await nginx.http.get("/readyz")
    assert proxied.headers["server"] == "nginx"
    # nginx's own error pages name the version in the body too (server_tokens).
    too_big = await nginx.http.post("/v1/register", content=b"x" * (2 * 1024 * 1024))
    assert too_big.status_code == 413
    assert too_big.headers["server"] == "nginx"
    assert "nginx/" not in too_big.text


async def test_auth_endpoints_are_rate_limited_per_address_by_nginx(stack: Stack, nginx: Api) -> None:
    async with (
        edge(stack, nginx_auth_rate="1r/m", nginx_auth_burst=5) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        # A spray: a different username every time, so chatd's per-username limit never applies.
        codes = []
        for path in ["/v1/login"] * 5 + ["/v1/register"] * 5:
            body = {"username": unique_name("spray"), "password": "not the password"}
            response = await client.post(path, json=body)
            codes.append(response.status_code)
        assert codes == [401] * 5 + [201] + [429] * 4  # 1 a minute, burst 5: the 7th is refused
        assert response.headers["content-type"] == "application/json"
        assert response.json() == {
            "error": {"code": "rate_limited", "message": "too many requests", "retry_after_ms": 60000}
        }
        assert response.headers["retry-after"] == "60"
        # Only the auth endpoints are limited.
        assert (await client.get("/readyz")).status_code == 200
        assert (await client.get("/v1/me")).status_code == 401
    # The session's nginx (the local stack's permissive values) still lets the suite register.
    assert (await nginx.user("after")).token


async def test_websockets_per_address_are_capped_by_nginx(stack: Stack) -> None:
    async with edge(stack, nginx_ws_conn_per_addr=3) as url:
        held = [await websockets.connect(ws_url(url)) for _ in range(3)]
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(ws_url(url))
        assert refused.value.response.status_code == 429
        assert b'"rate_limited"' in refused.value.response.body
        # Another address is not affected.
        other = await websockets.connect(ws_url(url), local_addr=("127.0.0.2", 0))
        await other.close()
        # A closed socket frees its slot (nginx counts it down when it sees the close).
        await held.pop().close()
        for _ in range(100):
            try:
                held.append(await websockets.connect(ws_url(url)))
                break
            except websockets.InvalidStatus:
                await asyncio.sleep(0.1)
        assert len(held) == 3
        for ws in held:
            await ws.close()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_stack_json_holding_passwords_is_private(stack: Stack, tmp_path: Path) -> None:
    assert stack.db_password in (stack.root / STATE).read_text()
    assert _mode(stack.root / STATE) == 0o600
    # Created private (never readable in between), also under a lax umask and over an old 0644 file.
    old = os.umask(0)
    try:
        fresh = Stack(root=tmp_path, db_password="secret")
        fresh.save()
        assert _mode(tmp_path / STATE) == 0o600
        (tmp_path / STATE).chmod(0o644)
        fresh.save()
        assert _mode(tmp_path / STATE) == 0o600
    finally:
        os.umask(old)
    assert [p.name for p in tmp_path.iterdir()] == [STATE]
