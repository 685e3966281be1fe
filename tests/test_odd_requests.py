"""Requests no client should send, answered the documented way (docs/protocol.md §1, §3, §6):
huge numbers, trailing slashes, broken WebSocket frames, and what nginx itself refuses."""

from __future__ import annotations

import asyncio
import base64
import os
import re
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import websockets

from chatd import http_api
from chatd.devstack import Stack
from chatd.errors import Code
from tests.conftest import Worker
from tests.helpers import Api, ws_url
from tests.test_edge import edge

# Past Python's int-conversion limit (4,300 digits): int() of it raises.
HUGE = "9" * 5000
ID_PATHS = [
    ("GET", "/v1/conversations/{}"),
    ("GET", "/v1/conversations/{}/members"),
    ("POST", "/v1/conversations/{}/members"),
    ("DELETE", "/v1/conversations/{}/members/7"),
    ("DELETE", "/v1/conversations/7/members/{}"),
    ("GET", "/v1/conversations/{}/messages"),
    ("GET", "/v1/conversations/{}/receipts?from=1&to=2"),
    ("GET", "/v1/conversations/{}/messages/1/readers"),
    ("GET", "/v1/conversations/1/messages/{}/readers"),
]
QUERIES = [
    ("members?after={n}", "after"),
    ("members?limit={n}", "limit"),
    ("messages?after={n}", "after"),
    ("messages?before={n}", "before"),
    ("messages?limit={n}", "limit"),
    ("receipts?from={n}&to=2", "from"),
    ("receipts?from=1&to={n}", "to"),
]


async def test_numbers_too_long_for_python_get_the_documented_errors_and_no_traceback(
    spawn_worker: Callable[..., Worker],
) -> None:
    """Issue 19 item 17: every id in a path and every integer query parameter, with and
    without a token, and a `since` key on the WebSocket."""
    worker = spawn_worker()
    api = Api(worker.url)
    alice, bob = await api.user(), await api.user()
    cid = await api.direct(alice, bob)
    for method, path in ID_PATHS:
        for zeros in ("", "0" * 5000):  # leading zeros keep the value: 000...0007 is 7
            url = path.format(zeros + HUGE)
            anonymous = await api.call(method, url, json={})
            assert anonymous.status_code == 401, (method, path, anonymous.text[:200])
            assert anonymous.json()["error"]["code"] == "unauthorized"
            response = await api.call(method, url, alice.token, json={"user_ids": [bob.id]})
            assert response.status_code == 403, (method, path, response.text[:200])
            assert response.json()["error"]["code"] == "not_member"
    padded = await api.call("GET", f"/v1/conversations/{'0' * 5000}{cid}", alice.token)
    assert padded.status_code == 200 and padded.json()["id"] == cid
    for query, name in QUERIES:
        response = await api.call("GET", f"/v1/conversations/{cid}/{query.format(n=HUGE)}", alice.token)
        assert response.status_code == 400, (query, response.text[:200])
        assert response.json()["error"] == {
            "code": "bad_request",
            "message": response.json()["error"]["message"],
            "field": name,
        }
    async with websockets.connect(ws_url(worker.url), max_size=2**20) as conn:
        await conn.send(orjson.dumps({"type": "auth", "token": alice.token, "since": {HUGE: 1}}).decode())
        reply = orjson.loads(await conn.recv())
        assert (reply["type"], reply["code"], reply["field"]) == ("error", "bad_request", "since")
        await conn.wait_closed()
        assert conn.close_code == 4001 and conn.close_reason == "bad_request"
    log = worker.log.read_text()
    assert "Traceback" not in log and "Exceeds the limit" not in log, log[-3000:]
    await api.http.aclose()


async def test_a_trailing_slash_is_an_unknown_path_not_a_redirect(w1: Api, nginx: Api) -> None:
    """Issue 19 item 20: `GET /v1/me/` got a 307 to a Location built from the Host header
    (`Host: evil.example` -> `http://evil.example/v1/me`); §3 says unknown paths get 404."""
    user = await w1.user()
    paths = [route.path.replace("{conversation_id:id}", "1") for route in http_api.routes]
    paths = [p.replace("{user_id:id}", "2").replace("{seq:id}", "3") for p in paths]
    assert "/v1/me" in paths and "/healthz" in paths
    for api in (w1, nginx):
        for path in [*paths, "/v1/ws"]:
            for method in ("GET", "POST"):
                response = await api.call(
                    method, path + "/", user.token, headers={"host": "evil.example"}, json={}
                )
                assert response.status_code == 404, (api.base_url, method, path, response.status_code)
                assert "location" not in response.headers
                assert response.json() == {"error": {"code": "not_found", "message": "Not Found"}}


async def read_some(reader: asyncio.StreamReader) -> bytes:
    """The next bytes, or none at the end. A server that closes with bytes of ours unread (a
    message over the limit) resets the connection: what came before the reset was read."""
    try:
        return await reader.read(65536)
    except ConnectionResetError:
        return b""


async def exchange(port: int, data: bytes, frames: bytes = b"", timeout: float = 10) -> bytes:
    """Write `data` on a new TCP connection to 127.0.0.1:`port`; what comes back: an HTTP
    response whole (its Content-Length read), or after a 101 (answered by writing `frames`,
    as a client may only once it has the 101) everything until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    received = b""
    async with asyncio.timeout(timeout):
        while chunk := await read_some(reader):
            received += chunk
            head, found, body = received.partition(b"\r\n\r\n")
            if found and head.startswith(b"HTTP/1.1 101") and frames:
                writer.write(frames)
                frames = b""
            elif found and not head.startswith(b"HTTP/1.1 101"):
                length = re.search(rb"(?im)^content-length: *(\d+)", head)
                if length and len(body) >= int(length.group(1)):
                    break
    writer.close()
    return received


def upgrade(path: str = "/v1/ws", method: str = "GET", version: str = "13", key: bool = True) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    head += f"Sec-WebSocket-Version: {version}\r\n"
    if key:
        head += f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n"
    return (head + "\r\n").encode()


def client_frame(opcode: int, payload: bytes, fin: bool = True, masked: bool = True) -> bytes:
    first = bytes([(0x80 if fin else 0) | opcode])
    size = len(payload)
    if size < 126:
        length = bytes([(0x80 if masked else 0) | size])
    elif size < 65536:
        length = bytes([(0x80 if masked else 0) | 126]) + struct.pack("!H", size)
    else:
        length = bytes([(0x80 if masked else 0) | 127]) + struct.pack("!Q", size)
    if not masked:
        return first + length + payload
    mask = os.urandom(4)
    return first + length + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def close_frame(received: bytes) -> tuple[int, str]:
    """The close frame's code and reason among the server's frames after the 101 response."""
    head, _, data = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    while data:
        opcode, size, data = data[0] & 0x0F, data[1] & 0x7F, data[2:]
        if size == 126:
            size, data = struct.unpack("!H", data[:2])[0], data[2:]
        elif size == 127:
            size, data = struct.unpack("!Q", data[:8])[0], data[8:]
        payload, data = data[:size], data[size:]
        if opcode == 8:
            return struct.unpack("!H", payload[:2])[0], payload[2:].decode()
    raise AssertionError(f"no close frame in {received[-200:]!r}")


def close_codes_documented() -> dict[int, str]:
    """§6's table: close code -> its Reason column."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "protocol.md").read_text()
    section = text.split("## 6. WebSocket close codes", 1)[1].split("\n## ", 1)[0]
    rows: dict[int, str] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) > 2 and cells[0].isdigit():
            rows[int(cells[0])] = rows.get(int(cells[0]), "") + cells[1]
    return rows


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        pytest.param(client_frame(1, b'{"type":"ping"}', masked=False), 1002, id="unmasked"),
        pytest.param(client_frame(3, b"x"), 1002, id="reserved-opcode"),
        pytest.param(client_frame(0, b"x"), 1002, id="stray-continuation"),
        pytest.param(client_frame(9, b"x" * 126), 1002, id="126-byte-ping"),
        pytest.param(client_frame(1, b"\xff"), 1007, id="not-utf-8"),
        # Only the header of the frame over the limit: the server refuses it on its length, and
        # bytes it never reads would make its close a reset.
        pytest.param(client_frame(1, b"x" * 70000)[:14], 1009, id="oversized"),
        pytest.param(
            client_frame(1, b"x" * 40000, fin=False) + client_frame(0, b"x" * 40000)[:8],
            1009,
            id="fragmented",
        ),
    ],
)
async def test_broken_frames_close_with_a_documented_code_and_reason(
    stack: Stack, frames: bytes, code: int
) -> None:
    """Issue 19 item 21: a frame that breaks RFC 6455 closes with 1002 (which §6 did not
    list), and an oversized message with 1009 and the reason §6 gives, fragmented or not;
    every reason sent is one §6 names."""
    documented = close_codes_documented()
    for port in (stack.http_port, stack.worker_ports[0]):  # through nginx, and a worker itself
        got, reason = close_frame(await exchange(port, upgrade(), frames))
        assert got == code, (port, got, reason)
        assert code in documented, f"close code {code} is not in protocol.md §6"
        if code == 1009:
            assert reason == "frame exceeds limit of 65536 bytes"
        assert (f"`{reason}`" if reason else "\N{EN DASH}") in documented[code], (reason, documented[code])


def error_body(received: bytes) -> tuple[int, dict[str, Any]]:
    """The status and the JSON error of a raw HTTP response in chatd's shape (§1)."""
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    assert headers.get("content-type", "").startswith("application/json"), (lines, body[:300])
    if "content-length" in headers:
        body = body[: int(headers["content-length"])]
    shape = orjson.loads(body)
    assert set(shape) == {"error"} and isinstance(shape["error"]["message"], str), shape
    assert shape["error"]["code"] in {code.value for code in Code}, shape
    return int(lines[0].split()[1]), shape["error"]


NGINX_REFUSES = [
    pytest.param(b"GET /v1/%00 HTTP/1.1\r\nHost: localhost\r\n\r\n", 400, "bad_request", id="nul-in-path"),
    pytest.param(b"TRACE /v1/me HTTP/1.1\r\nHost: localhost\r\n\r\n", 405, "method_not_allowed", id="trace"),
    pytest.param(b"GET /v1/me HTTX/1.1\r\nHost: localhost\r\n\r\n", 400, "bad_request", id="request-line"),
    pytest.param(b"GET /v1/me HTTP/1.1\r\n\r\n", 400, "bad_request", id="no-host"),
    pytest.param(
        b"GET /v1/me HTTP/1.1\r\nHost: localhost\r\nX-A: " + b"a" * 20000 + b"\r\n\r\n",
        400,
        "bad_request",
        id="header-too-large",
    ),
    pytest.param(
        b"GET /v1/" + b"a" * 20000 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n",
        414,
        "bad_request",
        id="uri-too-long",
    ),
    pytest.param(
        b"POST /v1/login HTTP/1.1\r\nHost: localhost\r\nContent-Length: abc\r\n\r\n",
        400,
        "bad_request",
        id="content-length",
    ),
    pytest.param(
        b"POST /v1/login HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: gzip\r\n\r\n",
        501,
        "bad_request",
        id="transfer-encoding",
    ),
    pytest.param(
        b"POST /v1/login HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2000000\r\n\r\n{}",
        413,
        "too_large",
        id="body-over-nginx-limit",
    ),
    pytest.param(
        b"GET /web/nothing-here.js HTTP/1.1\r\nHost: localhost\r\n\r\n", 404, "not_found", id="no-such-file"
    ),
]
# What the worker itself refuses before any route: the HTTP parser and the WebSocket handshake.
WORKER_REFUSES = [
    pytest.param(
        b"GET /v1/me HTTP/1.1\r\nHost: localhost\r\nX-A: a\x7fb\r\n\r\n",
        400,
        "bad_request",
        id="del-in-header",
    ),
    pytest.param(
        b"POST /v1/login HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
        "bad_request",
        id="length-and-chunked",
    ),
    pytest.param(upgrade(key=False), 400, "bad_request", id="upgrade-without-key"),
    pytest.param(upgrade(version="8"), 400, "bad_request", id="upgrade-old-version"),
    pytest.param(upgrade(method="POST"), 405, "method_not_allowed", id="upgrade-by-post"),
]


@pytest.mark.parametrize(("request_bytes", "status", "code"), NGINX_REFUSES + WORKER_REFUSES)
async def test_what_nginx_and_the_http_layer_refuse_is_in_chatds_error_shape(
    stack: Stack, request_bytes: bytes, status: int, code: str
) -> None:
    """Issue 19 item 22: raw requests through the test stack's nginx (the shipped template)."""
    got, error = error_body(await exchange(stack.http_port, request_bytes))
    assert (got, error["code"]) == (status, code), error


@pytest.mark.parametrize(("request_bytes", "status", "code"), WORKER_REFUSES)
async def test_what_a_worker_refuses_before_any_route_is_in_chatds_error_shape(
    stack: Stack, request_bytes: bytes, status: int, code: str
) -> None:
    got, error = error_body(await exchange(stack.worker_ports[0], request_bytes))
    assert (got, error["code"]) == (status, code), error


async def test_refused_cors_preflights_and_websocket_origins_are_in_chatds_error_shape(
    stack: Stack, spawn_worker: Callable[..., Worker]
) -> None:
    worker = spawn_worker(CHATD_ALLOWED_ORIGINS="https://app.example")
    preflight = (
        b"OPTIONS /v1/me HTTP/1.1\r\nHost: localhost\r\nOrigin: https://evil.example\r\n"
        b"Access-Control-Request-Method: GET\r\nConnection: close\r\n\r\n"
    )
    foreign = upgrade().replace(b"\r\n\r\n", b"\r\nOrigin: https://evil.example\r\n\r\n")
    async with edge(stack, {"chatd_upstreams": [f"127.0.0.1:{worker.port}"]}) as url:
        port = int(url.rsplit(":", 1)[1])
        for target in (port, worker.port):
            got, error = error_body(await exchange(target, preflight))
            assert (got, error["code"]) == (400, "bad_request"), error
            got, error = error_body(await exchange(target, foreign))
            assert (got, error["code"]) == (403, "forbidden"), error
