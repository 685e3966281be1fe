#!/usr/bin/env python3
"""End-to-end checks of a deployed chatd, from outside the hosts, through nginx.

    e2e.py setup    --base https://HOST --cafile CERT --state FILE --admin-file FILE
    e2e.py exchange --state FILE [--disrupt "SHELL COMMAND"] [--timeout 150]
    e2e.py edge     --base https://HOST --cafile CERT
    e2e.py web      --base https://HOST --cafile CERT
    e2e.py traffic  --state FILE --out FILE --stop-file FILE [--min-reconnects N]
    e2e.py push     --state FILE

setup checks that registering needs an invite (the role's default), logs in as the admin made
on the host (--admin-file: {"username", "password"}), creates an invite for two, registers two
users with it (a third is refused: used up), logs them in and opens a direct conversation.  exchange
connects both users' WebSockets (one after the other, so nginx's least_conn puts them
on different workers), optionally runs a disruptive command (restart a service, reboot
a host) and waits for the clients to reconnect, then checks that a message sent by
each is acked and delivered in real time to the other, and that the conversation's
history holds every message sent so far, in order.  edge checks the front end: plain
HTTP only redirects to HTTPS (and serves ACME challenges), HTTPS carries HSTS, nginx hides
its version, and a password spray from this address is cut off with a JSON 429.  TLS is
web fetches the web app over HTTPS and checks its security headers (CSP, nosniff, referrer
policy, no-cache with ETag revalidation, HSTS).  TLS is verified against CERT (the
deployment's self-signed certificate).  traffic keeps both users sending, one message each
every --interval seconds, reconnecting and resending (same client_msg_id) whenever a worker
goes away, until --stop-file appears; then each sends one more message that must be acked and
delivered live to the other (the clients are connected and sending again), and it writes every
acked client_msg_id and seq to --out.  push checks Web Push's endpoints: the VAPID public key is a
P-256 point, and a subscription (a browser's, as Firefox's push service would name it) is
stored for the device that registered it, listed, and deleted; nothing is ever sent to that
service (nobody writes to the user meanwhile).  Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import ssl
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import websockets


def tls(cafile: str | None) -> ssl.SSLContext | bool:
    return ssl.create_default_context(cafile=cafile) if cafile else True


def ws_url(base: str) -> str:
    return base.replace("http://", "ws://").replace("https://", "wss://") + "/v1/ws"


async def http_retry(client: httpx.AsyncClient, method: str, url: str, deadline: float,
                     **kw) -> httpx.Response:
    while True:
        try:
            resp = await client.request(method, url, **kw)
            if resp.status_code < 500:
                return resp
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{method} {url}: no good answer before the deadline")
        await asyncio.sleep(1)


async def whole_history(http: httpx.AsyncClient, cid: int, token: str, deadline: float) -> list[dict]:
    """The conversation's whole history, page by page, oldest first."""
    history: list[dict] = []
    before = None
    while True:
        query = f"limit=200&before={before}" if before else "limit=200"
        r = await http_retry(http, "GET", f"/v1/conversations/{cid}/messages?{query}", deadline,
                             headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, (r.status_code, r.text)
        page = r.json()["messages"]
        history = page + history
        if len(page) < 200:
            return history
        before = page[0]["seq"]


async def setup(args: argparse.Namespace) -> dict:
    deadline = time.monotonic() + args.timeout
    suffix = secrets.token_hex(3)
    users = {}
    admin = json.loads(Path(args.admin_file).read_text())
    async with httpx.AsyncClient(base_url=args.base, timeout=10, verify=tls(args.cafile)) as client:
        r = await http_retry(client, "GET", "/v1/server", deadline)
        assert r.json() == {"registration": "invite"}, r.text
        r = await http_retry(client, "POST", "/v1/register", deadline,
                             json={"username": f"nobody{suffix}", "password": secrets.token_urlsafe(12)})
        assert r.status_code == 403 and r.json()["error"]["code"] == "invite_required", (r.status_code, r.text)
        r = await http_retry(client, "POST", "/v1/login", deadline, json=admin)
        assert r.status_code == 200, (r.status_code, r.text)
        r = await http_retry(client, "POST", "/v1/admin/invites", deadline, json={"max_uses": 2, "note": "e2e"},
                             headers={"Authorization": f"Bearer {r.json()['token']}"})
        assert r.status_code == 201, (r.status_code, r.text)
        invite = r.json()["token"]
        for who in ("alice", "bob", "carol"):
            name, password = f"{who}{suffix}", secrets.token_urlsafe(12)
            r = await http_retry(client, "POST", "/v1/register", deadline,
                                 json={"username": name, "password": password, "invite": invite})
            if who == "carol":  # the invite was for two
                assert r.status_code == 403 and r.json()["error"]["code"] == "invalid_invite", r.text
                break
            assert r.status_code == 201, (r.status_code, r.text)
            r = await http_retry(client, "POST", "/v1/login", deadline,
                                 json={"username": name, "password": password})
            assert r.status_code == 200, (r.status_code, r.text)
            users[who] = {"username": name, "token": r.json()["token"],
                          "user_id": r.json()["user_id"]}
        r = await http_retry(client, "POST", "/v1/conversations/direct", deadline,
                             json={"username": users["bob"]["username"]},
                             headers={"Authorization": f"Bearer {users['alice']['token']}"})
        assert r.status_code in (200, 201), (r.status_code, r.text)
    state = {"base": args.base, "cafile": args.cafile, "users": users, "conversation_id": r.json()["id"], "sent": []}
    Path(args.state).write_text(json.dumps(state))
    return {"setup": "ok", "conversation_id": state["conversation_id"]}


class Client:
    def __init__(self, base: str, user: dict, cafile: str | None) -> None:
        self.base, self.user, self.cafile = base, user, cafile
        self.ws = None
        self.frames: asyncio.Queue = asyncio.Queue()
        self.close_codes: list[int | None] = []
        self.reader: asyncio.Task | None = None
        self.reconnects = 0

    async def connect(self, deadline: float) -> None:
        while True:
            try:
                ssl_context = tls(self.cafile) if self.base.startswith("https://") else None
                self.ws = await websockets.connect(ws_url(self.base), open_timeout=5, ssl=ssl_context)
                await self.ws.send(json.dumps({"type": "auth", "token": self.user["token"]}))
                while True:
                    frame = json.loads(await asyncio.wait_for(self.ws.recv(), 10))
                    if frame.get("type") == "ready":
                        break
                self.frames = asyncio.Queue()
                self.reader = asyncio.create_task(self._read())
                return
            except (OSError, asyncio.TimeoutError, websockets.WebSocketException):
                if time.monotonic() > deadline:
                    raise SystemExit(f"{self.user['username']}: could not reconnect") from None
                await asyncio.sleep(1)

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                await self.frames.put(json.loads(raw))
        except websockets.ConnectionClosed:
            pass
        self.close_codes.append(self.ws.close_code)

    @property
    def closed(self) -> bool:
        return self.reader is None or self.reader.done()

    async def expect(self, kind: str, key: str, value: str, timeout: float = 15) -> dict:
        end = time.monotonic() + timeout
        while (left := end - time.monotonic()) > 0:
            frame = await asyncio.wait_for(self.frames.get(), left)
            if frame.get("type") == kind and frame.get(key) == value:
                return frame
        raise SystemExit(f"{self.user['username']}: no {kind} with {key}={value}")


async def exchange(args: argparse.Namespace) -> dict:
    state = json.loads(Path(args.state).read_text())
    base, cid = state["base"], state["conversation_id"]
    deadline = time.monotonic() + args.timeout
    alice = Client(base, state["users"]["alice"], state.get("cafile"))
    bob = Client(base, state["users"]["bob"], state.get("cafile"))
    await alice.connect(deadline)
    await bob.connect(deadline)
    result: dict = {}
    if args.disrupt:
        started = time.monotonic()
        subprocess.run(args.disrupt, shell=True, check=False, timeout=60,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        await asyncio.sleep(args.settle)
        for c in (alice, bob):
            if c.closed:
                await c.connect(deadline)
        result["recovered_s"] = round(time.monotonic() - started, 1)
        result["close_codes"] = alice.close_codes + bob.close_codes
    for sender, receiver in ((alice, bob), (bob, alice)):
        body, cmid = f"hello from {sender.user['username']} {time.time():.3f}", str(uuid.uuid4())
        for attempt in range(30):
            try:
                await sender.ws.send(json.dumps({"type": "send", "conversation_id": cid,
                                                 "client_msg_id": cmid, "body": body}))
                ack = await sender.expect("ack", "client_msg_id", cmid, timeout=10)
                break
            except (websockets.ConnectionClosed, SystemExit, asyncio.TimeoutError):
                # Postgres or Redis may still be coming back: resend (idempotent by client_msg_id).
                if attempt == 29 or time.monotonic() > deadline:
                    raise
                if sender.closed:
                    await sender.connect(deadline)
                await asyncio.sleep(1)
        msg = None
        end = time.monotonic() + 15
        while msg is None and time.monotonic() < end:
            frame = await asyncio.wait_for(receiver.frames.get(), end - time.monotonic())
            if frame.get("type") == "message" and frame.get("body") == body:
                msg = frame
        assert msg is not None, "message not delivered in real time"
        assert msg["seq"] == ack["seq"], (msg, ack)
        state["sent"].append(cmid)
    async with httpx.AsyncClient(base_url=base, timeout=10, verify=tls(state.get("cafile"))) as client:
        r = await http_retry(client, "GET", f"/v1/conversations/{cid}/messages?limit=200",
                             deadline, headers={"Authorization": f"Bearer {alice.user['token']}"})
        assert r.status_code == 200, (r.status_code, r.text)
    history = r.json()["messages"]
    seqs = [m["seq"] for m in history]
    assert seqs == sorted(seqs), "history not ordered by seq"
    ids = [m["client_msg_id"] for m in history]
    missing = [c for c in state["sent"] if c not in ids]
    assert not missing, f"history lost messages: {missing}"
    for c in (alice, bob):
        await c.ws.close()
    Path(args.state).write_text(json.dumps(state))
    result.update({"exchange": "ok", "history": len(history)})
    return result


async def send_until_acked(client: Client, cid: int, body: str, deadline: float) -> dict:
    """Send, and on a lost connection reconnect and resend the same client_msg_id until acked."""
    cmid = str(uuid.uuid4())
    while True:
        try:
            if client.closed:
                await client.connect(deadline)
                client.reconnects += 1
            await client.ws.send(json.dumps({"type": "send", "conversation_id": cid,
                                             "client_msg_id": cmid, "body": body}))
            return await client.expect("ack", "client_msg_id", cmid, timeout=10)
        except (websockets.ConnectionClosed, SystemExit, asyncio.TimeoutError):
            if time.monotonic() > deadline:
                raise SystemExit(f"{client.user['username']}: {body!r} never acked") from None
            await asyncio.sleep(0.5)


async def traffic(args: argparse.Namespace) -> dict:
    state = json.loads(Path(args.state).read_text())
    cid = state["conversation_id"]
    deadline = time.monotonic() + args.timeout
    clients = [Client(state["base"], state["users"][who], state.get("cafile")) for who in ("alice", "bob")]
    acked: list[dict] = []
    for c in clients:
        await c.connect(deadline)

    async def keep_sending(c: Client) -> None:
        n = 0
        while not Path(args.stop_file).exists():
            n += 1
            ack = await send_until_acked(c, cid, f"traffic {c.user['username']} {n}", deadline)
            acked.append({"client_msg_id": ack["client_msg_id"], "seq": ack["seq"]})
            await asyncio.sleep(args.interval)

    await asyncio.gather(*(keep_sending(c) for c in clients))
    # Both are connected and sending again: one more message each, acked and delivered live.
    for sender, receiver in (clients, clients[::-1]):
        body = f"after the restarts from {sender.user['username']}"
        ack = await send_until_acked(sender, cid, body, deadline)
        acked.append({"client_msg_id": ack["client_msg_id"], "seq": ack["seq"]})
        msg = await receiver.expect("message", "body", body, timeout=15)
        assert msg["seq"] == ack["seq"], (msg, ack)
    Path(args.out).write_text(json.dumps({"conversation_id": cid, "acked": acked}))
    reconnects = {c.user["username"]: c.reconnects for c in clients}
    assert min(reconnects.values()) >= args.min_reconnects, reconnects
    for c in clients:
        await c.ws.close()
    return {"traffic": "ok", "acked": len(acked), "reconnects": reconnects,
            "close_codes": sorted({code for c in clients for code in c.close_codes if code})}


async def edge(args: argparse.Namespace) -> dict:
    base = args.base
    plain = base.replace("https://", "http://")
    host = base.removeprefix("https://")
    async with httpx.AsyncClient(timeout=10) as client:
        # Port 80 never reaches chatd: a login over plain HTTP is redirected, not served.
        for method, path in (("GET", "/v1/me"), ("POST", "/v1/login"), ("GET", "/readyz")):
            r = await client.request(method, plain + path, json={} if method == "POST" else None)
            assert r.status_code == 301, (method, path, r.status_code, r.text)
            assert r.headers["location"] == f"https://{host}{path}", r.headers
            assert "strict-transport-security" not in r.headers
        # ... except ACME http-01 challenges, served from a directory (none here: 404).
        r = await client.get(plain + "/.well-known/acme-challenge/no-such-token")
        assert r.status_code == 404, (r.status_code, r.headers)
        assert r.headers["server"] == "nginx", r.headers
    async with httpx.AsyncClient(base_url=base, timeout=10, verify=tls(args.cafile)) as client:
        r = await client.get("/readyz")
        assert r.status_code == 200, (r.status_code, r.text)
        assert r.headers["strict-transport-security"] == "max-age=63072000", r.headers
        assert r.headers["server"] == "nginx", r.headers
        # A spray of logins from one address: nginx cuts it off (burst 20) in chatd's shape.
        codes = []
        for i in range(30):
            r = await client.post("/v1/login", json={"username": f"spray{i}x{secrets.token_hex(3)}",
                                                     "password": "not the password"})
            codes.append(r.status_code)
        assert codes[0] == 401 and codes[-1] == 429, codes
        assert r.json()["error"]["code"] == "rate_limited", r.text
        assert r.headers["strict-transport-security"] == "max-age=63072000", r.headers
    return {"edge": "ok", "first_429": codes.index(429) + 1}


async def web(args: argparse.Namespace) -> dict:
    async with httpx.AsyncClient(base_url=args.base, timeout=10, verify=tls(args.cafile)) as client:
        index = await client.get("/")
        assert index.status_code == 200 and '<script type="module" src="/web/js/main.js">' in index.text, (
            index.status_code, index.text[:200])
        module = await client.get("/web/js/main.js")
        assert module.status_code == 200 and module.headers["content-type"].startswith("text/javascript")
        assert module.headers.get("content-encoding") == "gzip", module.headers
        again = await client.get("/web/js/main.js", headers={"If-None-Match": module.headers["etag"]})
        assert again.status_code == 304, again.status_code
        for r in (index, module, await client.get("/web/app.css")):
            csp = r.headers["content-security-policy"]
            for directive in ("default-src 'none'", "script-src 'self'", "connect-src 'self'",
                              "frame-ancestors 'none'"):
                assert directive in csp, (r.url, csp)
            assert "unsafe-inline" not in csp, csp
            assert r.headers["x-content-type-options"] == "nosniff", r.headers
            assert r.headers["referrer-policy"] == "no-referrer", r.headers
            assert r.headers["cache-control"] == "no-cache", r.headers
            assert r.headers["strict-transport-security"] == "max-age=63072000", r.headers
        # The API still answers beside it.
        assert (await client.get("/v1/me")).status_code == 401
    return {"web": "ok", "index_bytes": len(index.content)}


async def push(args: argparse.Namespace) -> dict:
    import base64
    import os

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    state = json.loads(Path(args.state).read_text())
    token = state["users"]["alice"]["token"]
    auth = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=state["base"], timeout=10, verify=tls(state["cafile"])) as client:
        key = await client.get("/v1/push/key")
        assert key.status_code == 200, (key.status_code, key.text)
        point = base64.urlsafe_b64decode(key.json()["public_key"] + "==")
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
        browser = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        endpoint = f"https://updates.push.services.mozilla.com/wpush/v2/chatd-molecule-{secrets.token_hex(8)}"
        sub = {"endpoint": endpoint, "keys": {"p256dh": b64(browser), "auth": b64(os.urandom(16))}}
        made = await client.post("/v1/push/subscriptions", json=sub, headers=auth)
        assert made.status_code == 201, (made.status_code, made.text)
        listed = (await client.get("/v1/push/subscriptions", headers=auth)).json()["subscriptions"]
        assert [(s["endpoint"], s["this_device"]) for s in listed] == [(endpoint, True)], listed
        gone = await client.request("DELETE", "/v1/push/subscriptions", json={"endpoint": endpoint}, headers=auth)
        assert gone.status_code == 204, (gone.status_code, gone.text)
        assert (await client.get("/v1/push/subscriptions", headers=auth)).json()["subscriptions"] == []
        worker = await client.get("/web/sw.js")
        assert worker.status_code == 200 and worker.headers["content-type"].startswith("text/javascript"), (
            worker.status_code, worker.headers)
    return {"push": "ok", "public_key": key.json()["public_key"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("setup")
    p.add_argument("--base", required=True)
    p.add_argument("--state", required=True)
    p.add_argument("--cafile", help="CA (or self-signed) certificate to verify HTTPS with")
    p.add_argument("--admin-file", required=True, help='the admin made on the host: {"username", "password"}')
    p.add_argument("--timeout", type=float, default=120)
    p = sub.add_parser("exchange")
    p.add_argument("--state", required=True)
    p.add_argument("--disrupt")
    p.add_argument("--settle", type=float, default=3, help="seconds to wait after --disrupt")
    p.add_argument("--timeout", type=float, default=150)
    p = sub.add_parser("edge")
    p.add_argument("--base", required=True)
    p.add_argument("--cafile")
    p = sub.add_parser("web")
    p.add_argument("--base", required=True)
    p.add_argument("--cafile")
    p = sub.add_parser("traffic")
    p.add_argument("--state", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--stop-file", required=True)
    p.add_argument("--interval", type=float, default=0.3, help="under the send rate limit (50 per 10 s)")
    p.add_argument("--min-reconnects", type=int, default=1)
    p.add_argument("--timeout", type=float, default=1200)
    p = sub.add_parser("push")
    p.add_argument("--state", required=True)
    p.add_argument("--timeout", type=float, default=1200)
    args = parser.parse_args()
    commands = {"setup": setup, "exchange": exchange, "edge": edge, "web": web, "traffic": traffic,
                "push": push}
    out = asyncio.run(commands[args.cmd](args))
    print(json.dumps(out))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
