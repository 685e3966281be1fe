"""Requests no client should send, answered the documented way (docs/protocol.md §1, §3, §6):
huge numbers, trailing slashes, broken WebSocket frames, and what nginx itself refuses."""

from __future__ import annotations

from collections.abc import Callable

import orjson
import websockets

from chatd import http_api
from tests.conftest import Worker
from tests.helpers import Api, ws_url

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
