"""Peer (d): a durable peer, Matrix Synapse (from PyPI, one monolith process) on the same
PostgreSQL. 1:1 rooms like scenario 1: send with PUT .../send (200 = persisted), receive with
/sync long-polls; the offered rate ramps until p99 send->ack passes 1 s or acks fall behind.
Its figure is the highest rate at p99 ack <= 1 s with every lower step passing too."""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from typing import Any

import asyncpg
import httpx

from bench.context import Ctx, Placement, log
from bench.headline import durable_max
from bench.peers import install, synapse_conf
from bench.peers.procs import Procs
from bench.scenarios import durable
from bench.steps import Sends

REQUIREMENTS = ["matrix-synapse>=1.100,<2", "psycopg2-binary>=2.9,<3"]
QUICK_RATES = [20]
FULL_RATES = [10, 25, 50, 100, 150, 200, 300, 400, 600, 800]
STOP_P99_MS = 1000.0


async def _database(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = 'synapse'"):
            await conn.execute(
                "CREATE DATABASE synapse ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
            )
    finally:
        await conn.close()


async def _population(url: str, pairs: int) -> list[tuple[dict[str, str], dict[str, str], str]]:
    run = secrets.token_hex(3)
    names = itertools.count()
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        sem = asyncio.Semaphore(16)

        async def user() -> dict[str, str]:
            body = {
                "username": f"b{run}x{next(names)}",
                "password": "bench-pass",
                "auth": {"type": "m.login.dummy"},
            }
            async with sem:
                r = await http.post("/_matrix/client/v3/register", json=body)
            r.raise_for_status()
            return {"token": r.json()["access_token"], "mxid": r.json()["user_id"]}

        async def room(a: dict[str, str], b: dict[str, str]) -> str:
            async with sem:
                r = await http.post(
                    "/_matrix/client/v3/createRoom",
                    headers={"authorization": f"Bearer {a['token']}"},
                    json={"preset": "private_chat", "invite": [b["mxid"]], "is_direct": True},
                )
                r.raise_for_status()
                room_id: str = r.json()["room_id"]
                j = await http.post(
                    f"/_matrix/client/v3/join/{room_id}",
                    headers={"authorization": f"Bearer {b['token']}"},
                    json={},
                )
                j.raise_for_status()
            return room_id

        users = await asyncio.gather(*(user() for _ in range(2 * pairs)))
        senders, receivers = users[:pairs], users[pairs:]
        rooms = await asyncio.gather(*(room(a, b) for a, b in zip(senders, receivers, strict=True)))
        return list(zip(senders, receivers, rooms, strict=True))


def _wait_http(url: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/_matrix/client/versions", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError("synapse did not answer in time")


def run(ctx: Ctx) -> dict[str, Any]:
    assert ctx.stack is not None
    stack = ctx.stack
    log("synapse: installing matrix-synapse into bench/.peers/synapse")
    python = install.venv("synapse", REQUIREMENTS)
    asyncio.run(_database(stack.database_url))
    procs = Procs(ctx.work / "synapse")
    from chatd.devstack import free_port

    port = free_port()
    conf = synapse_conf.write(procs.root, port, stack.pg_port, stack.db_password)
    url = f"http://127.0.0.1:{port}"
    fleet = None
    try:
        install._run(
            [str(python), "-m", "synapse.app.homeserver", "--config-path", str(conf), "--generate-keys"]
        )
        procs.spawn(
            "synapse",
            [str(python), "-m", "synapse.app.homeserver", "--config-path", str(conf)],
            env={"PATH": "/usr/bin:/bin"},
            cwd=procs.root,
        )
        _wait_http(url)
        pairs = 10 if ctx.quick else 50
        population = asyncio.run(_population(url, pairs))
        fleet = ctx.fleet()
        place = Placement(len(fleet))
        sends: Sends = [[] for _ in range(len(fleet))]
        for k, (a, b, room) in enumerate(population):
            agent, local = place.add({**a, "tag": "sender"}, k)
            sends[agent].append((local, room))
            place.add({**b, "tag": "receiver"}, k + 1)
        connected = place.connect(fleet, url, ctx, proto="matrix")
        log(f"synapse: {connected['connected']} clients syncing ({connected['failed']} failed)")
        roots = {"synapse": procs.pids["synapse"], "postgres": stack.postmaster_pid(), **fleet.pids}
        rates = QUICK_RATES if ctx.quick else FULL_RATES
        duration = 2.0 if ctx.quick else 8.0
        steps = durable.ramp(
            ctx,
            fleet,
            rates,
            duration,
            sends,
            3.0,
            "synapse",
            roots=roots,
            first_step=2000,
            stop_p99_ms=STOP_P99_MS,
        )
    finally:
        if fleet is not None:
            fleet.close()
        procs.stop()
    # the same rule as chatd's headline: every step up to the figure passed (bench/headline.py)
    sustained, at_50 = durable_max(steps, STOP_P99_MS), durable_max(steps, 50.0)
    return {
        "pairs": pairs,
        "workers": "1 (monolith)",
        "connect": connected,
        "steps": steps,
        "max_sustained_rate": sustained["rate"],
        "p99_ack_ms_at_max": sustained["p99"],
        "kept_up_at_top_step": sustained["top"],
        "max_rate_p99_ack_le_50ms": at_50["rate"],
        "versions": install.versions(python, ["matrix-synapse", "psycopg2-binary", "twisted"]),
    }
