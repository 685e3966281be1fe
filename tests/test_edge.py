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
import socket
import ssl
import stat
import struct
import subprocess
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import orjson
import pytest
import websockets

from chatd.devstack import STATE, Stack
from chatd.processes import free_port
from tests.helpers import Api, unique_name, ws_url


def _edge_stack(stack: Stack, site_vars: dict[str, object] | None = None, **limits: object) -> Stack:
    root = Path(tempfile.mkdtemp(prefix="chatd-edge-"))
    for sub in ("logs", "nginx/tmp"):
        (root / sub).mkdir(parents=True)
    root.chmod(0o755)
    (root / "nginx/tmp").chmod(0o777)
    other = dataclasses.replace(stack, root=root, http_port=free_port(), pids={}, **limits)  # type: ignore[arg-type]
    other.start_nginx(**(site_vars or {}))
    return other


def _edge_down(other: Stack) -> None:
    other.down()
    shutil.rmtree(other.root, ignore_errors=True)


@asynccontextmanager
async def edge(
    stack: Stack, site_vars: dict[str, object] | None = None, **limits: object
) -> AsyncIterator[str]:
    """Another nginx from the production template, with `limits`, in front of the same workers."""
    other = await asyncio.to_thread(_edge_stack, stack, site_vars, **limits)
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


def _tls_files(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, and an ACME webroot holding one token."""
    directory.chmod(0o755)
    challenges = directory / "acme" / ".well-known" / "acme-challenge"
    challenges.mkdir(parents=True)
    (challenges / "token1").write_text("token1.thumbprint")
    cert, key = directory / "edge.crt", directory / "edge.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    key.chmod(0o644)  # nginx's workers run as nobody here
    return cert, key


async def test_with_tls_plain_http_only_redirects_and_https_has_hsts(stack: Stack) -> None:
    """The production shape (nginx_tls): the API never answers on plain HTTP."""
    tmp_path = Path(tempfile.mkdtemp(prefix="chatd-tls-"))  # nginx's user (nobody) must read it
    cert, key = await asyncio.to_thread(_tls_files, tmp_path)
    https_port = free_port()
    site_vars: dict[str, object] = {
        "nginx_tls": "true",  # as an INI inventory gives it
        "nginx_listen_https": [f"127.0.0.1:{https_port}"],
        "nginx_tls_certificate": str(cert),
        "nginx_tls_certificate_key": str(key),
        "nginx_hsts_max_age": 63072000,
        "nginx_acme_challenge_root": str(tmp_path / "acme"),
    }
    async with edge(stack, site_vars) as plain:
        async with httpx.AsyncClient(base_url=plain) as client:
            for method, path in (("POST", "/v1/login"), ("GET", "/v1/me"), ("GET", "/readyz?x=1")):
                response = await client.request(method, path)
                assert response.status_code == 301, (method, path, response.text)
                assert response.headers["location"] == f"https://127.0.0.1{path}"
            challenge = await client.get("/.well-known/acme-challenge/token1")
            assert (challenge.status_code, challenge.text) == (200, "token1.thumbprint")
        tls = ssl.create_default_context(cafile=str(cert))
        secure = f"https://127.0.0.1:{https_port}"
        async with httpx.AsyncClient(base_url=secure, verify=tls) as client:
            ready = await client.get("/readyz")
            assert ready.status_code == 200
            assert ready.headers["strict-transport-security"] == "max-age=63072000"
            assert ready.headers["server"] == "nginx"
            user = unique_name("tls")
            body = {"username": user, "password": "correct horse battery"}
            assert (await client.post("/v1/register", json=body)).status_code == 201
            login = await client.post("/v1/login", json=body)
            assert login.status_code == 200
        ws = await websockets.connect(secure.replace("https", "wss") + "/v1/ws", ssl=tls)
        await ws.send(orjson.dumps({"type": "auth", "token": login.json()["token"]}).decode())
        assert orjson.loads(await ws.recv())["type"] == "ready"
        await ws.close()
    await asyncio.to_thread(shutil.rmtree, tmp_path, True)


@asynccontextmanager
async def resetting_upstream() -> AsyncIterator[int]:
    """A port that takes a request and resets the connection without an answer: a worker
    shutting down (its accept queue and idle keep-alive connections are reset, or closed
    just as nginx reuses one)."""

    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.close()

    server = await asyncio.start_server(reset, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def test_a_presence_lookup_is_retried_on_another_worker_when_one_drops_it(
    stack: Stack, nginx: Api
) -> None:
    """A rolling restart resets connections of the worker going down. nginx retries a GET on
    the next worker by itself but never a POST, so the web app's presence lookup (a POST only
    because it carries a list) answered 502 during every restart; it is a read, and is retried."""
    alice, bob = await nginx.user(), await nginx.user()
    await nginx.direct(alice, bob)
    async with resetting_upstream() as port:
        ports = [port, stack.worker_ports[0]]
        async with edge(stack, worker_ports=ports) as url, httpx.AsyncClient(base_url=url) as http:
            headers = {"authorization": f"Bearer {alice.token}"}
            lookup = {"user_ids": [bob.id]}
            statuses = [
                (await http.post("/v1/presence", json=lookup, headers=headers)).status_code for _ in range(10)
            ]
            # Read paths that are GETs were already retried; a check that the edge works.
            me = await http.get("/v1/me", headers=headers)
    assert me.status_code == 200
    assert statuses == [200] * 10
