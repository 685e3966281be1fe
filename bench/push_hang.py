"""Acks and a worker's memory while every push service it posts to hangs (issue 22).

One worker of its own local stack; `--recipients` users each share a direct conversation with
a sender and hold `--subscriptions` push subscriptions on a push service this script runs on
loopback, which reads each request and never answers. The sender sends `--sends` messages,
round robin over the conversations, one at a time (each waits for its ack), twice: first with
no subscriptions at all (nothing to push), then with the hung ones. With
CHATD_PUSH_INTERVAL_S=0 every message makes a push to every subscription of its recipient.
Reported per phase: ack latency (p50, p99, max) and the worker's RSS every `--sample` sends;
then the worker's push gauges (held requests, dropped ones).

    .venv/bin/python -m bench.push_hang [--sends 3000 --recipients 50 --subscriptions 4]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import websockets
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bench.procstat import rss_bytes
from bench.stats import summary
from chatd.devstack import Stack

PASSWORD = "bench-password-not-secret"  # noqa: S105


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class HungService:
    """Reads requests and never answers them."""

    def __init__(self) -> None:
        self.requests = 0
        self.port = 0
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def close(self) -> None:
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        with contextlib.suppress(ConnectionError):
            while line := await reader.readline():
                if line.startswith(b"POST "):
                    self.requests += 1


def subscription(endpoint: str) -> dict[str, Any]:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    point = key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return {"endpoint": endpoint, "keys": {"p256dh": b64url(point), "auth": b64url(os.urandom(16))}}


async def user(http: httpx.AsyncClient, name: str) -> tuple[int, str]:
    created = await http.post("/v1/register", json={"username": name, "password": PASSWORD})
    assert created.status_code == 201, created.text
    login = (await http.post("/v1/login", json={"username": name, "password": PASSWORD})).json()
    return login["user_id"], login["token"]


def gauges(text: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(("chatd_push_held ", 'chatd_pushes_total{outcome="dropped"}')):
            name, value = line.rsplit(" ", 1)
            found[name] = float(value)
    return found


async def measure(stack: Stack, sends: int, recipients: int, subs: int, sample: int) -> dict[str, Any]:
    hung = HungService()
    await hung.start()
    pid = stack.pids["worker-1"]
    async with httpx.AsyncClient(base_url=stack.worker_url(0), timeout=60) as http:
        _, sender = await user(http, "sender")
        tokens, cids = [], []
        for r in range(recipients):
            _, token = await user(http, f"rcpt{r}")
            tokens.append(token)
            opened = await http.post(
                "/v1/conversations/direct",
                headers={"authorization": f"Bearer {sender}"},
                json={"username": f"rcpt{r}"},
            )
            cids.append(opened.json()["id"])
        ws = await websockets.connect(stack.worker_url(0).replace("http", "ws", 1) + "/v1/ws", max_size=2**24)
        await ws.send(orjson.dumps({"type": "auth", "token": sender}).decode())
        while orjson.loads(await ws.recv())["type"] != "synced":
            pass

        async def phase(tag: str) -> dict[str, Any]:
            took, rss = [], [rss_bytes(pid)]
            for i in range(sends):
                frame = {
                    "type": "send",
                    "conversation_id": cids[i % recipients],
                    "client_msg_id": f"{tag}{i}",
                }
                started = time.perf_counter()
                await ws.send(orjson.dumps({**frame, "body": f"message {i}"}).decode())
                while True:
                    reply = orjson.loads(await ws.recv())
                    mine = reply.get("client_msg_id", frame["client_msg_id"]) == frame["client_msg_id"]
                    if reply["type"] in ("ack", "error") and mine:
                        break
                assert reply["type"] == "ack", reply
                took.append(time.perf_counter() - started)
                if (i + 1) % sample == 0:
                    rss.append(rss_bytes(pid))
            return {
                "ack_ms": summary([t * 1000 for t in took]),
                "rss_mib": [round(r / 2**20, 1) for r in rss],
            }

        quiet = await phase("q")
        for r, token in enumerate(tokens):
            for s in range(subs):
                body = subscription(f"http://127.0.0.1:{hung.port}/hang/{r}/{s}")
                made = await http.post(
                    "/v1/push/subscriptions", headers={"authorization": f"Bearer {token}"}, json=body
                )
                assert made.status_code == 201, made.text
        hanging = await phase("h")
        metrics = gauges((await http.get(stack.metrics_url(0))).text)
        await ws.close()
    hung.close()
    return {
        "sends_per_phase": sends,
        "recipients": recipients,
        "subscriptions_each": subs,
        "push_requests_made": sends * subs,
        "no_subscriptions": quiet,
        "push_service_hung": hanging,
        "requests_the_hung_service_got": hung.requests,
        "worker_push_gauges": metrics,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sends", type=int, default=3000)
    parser.add_argument("--recipients", type=int, default=50)
    parser.add_argument("--subscriptions", type=int, default=4)
    parser.add_argument("--sample", type=int, default=500, help="RSS every this many sends")
    parser.add_argument("--out", type=Path, help="also write the result as JSON here")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="chatd-push-hang-"))
    env = {
        "CHATD_LOG_LEVEL": "warning",
        "CHATD_ARGON2_TIME_COST": "1",
        "CHATD_ARGON2_MEMORY_KIB": "1024",
        "CHATD_RATE_LIMIT_MESSAGES": "1000000",
        "CHATD_REGISTER_RATE_LIMIT": "100000",
        "CHATD_LOGIN_ADDRESS_RATE_LIMIT": "100000",
        "CHATD_PUSH_SERVICES": "http://127.0.0.1",
        "CHATD_PUSH_INTERVAL_S": "0",
        "CHATD_PUSH_TIMEOUT_S": "120",
    }
    stack = Stack(root=root, workers=1, tcp_workers=True, extra_env=env)
    try:
        stack.up()
        result = asyncio.run(measure(stack, args.sends, args.recipients, args.subscriptions, args.sample))
    finally:
        stack.down()
        shutil.rmtree(root, ignore_errors=True)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
