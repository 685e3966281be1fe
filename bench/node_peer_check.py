"""Check the Node like-for-like peer keeps chatd's promises (issue 23), on a stack of its own.

`python -m bench.node_peer_check [--sends 200]`: two senders on different Node processes send
into one group at once (the third member on one of them), then one resends an acknowledged
client_msg_id and a non-member sends. Checks: every send acked, each member's socket got every
message in seq order, the rows in PostgreSQL have gapless seqs 1..N and one row per
client_msg_id, the resend is acked with `duplicate: true` and the original seq, and the
non-member is refused with `not_member`. Prints what it found; exit 1 on a failure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import asyncpg
from websockets.asyncio.client import ClientConnection, unix_connect

from bench import chatstack
from bench.baselines import node_durable
from bench.peers.procs import Procs
from bench.population import Api, User


async def _open(sock: Path, user: User) -> ClientConnection:
    ws = await unix_connect(str(sock), "ws://localhost/v1/ws")
    await ws.send(json.dumps({"type": "auth", "token": user.token}))
    while json.loads(await ws.recv())["type"] != "synced":
        pass
    return ws


async def _send(ws: ClientConnection, cid: int, cmid: str, body: str) -> None:
    await ws.send(json.dumps({"type": "send", "conversation_id": cid, "client_msg_id": cmid, "body": body}))


async def _collect(ws: ClientConnection, want_msgs: int, want_acks: int) -> tuple[list[Any], list[Any]]:
    msgs: list[Any] = []
    acks: list[Any] = []
    while len(msgs) < want_msgs or len(acks) < want_acks:
        frame = json.loads(await asyncio.wait_for(ws.recv(), 30))
        if frame["type"] == "message":
            msgs.append(frame)
        elif frame["type"] == "ack":
            acks.append(frame)
        else:
            raise RuntimeError(f"unexpected frame {frame}")
    return msgs, acks


async def check(stack: chatstack.BenchStack, socks: list[Path], sends: int) -> list[str]:
    async with Api(stack.url) as api:
        a, b, c, outsider = await api.users(4)
        cid = await api.group(a, [a, b, c], "check")
    wa, wb, wc = await _open(socks[0], a), await _open(socks[1], b), await _open(socks[1], c)
    for n in range(sends):
        await _send(wa, cid, f"a{n}", f"a{n}")
        await _send(wb, cid, f"b{n}", f"b{n}")
    total = 2 * sends
    (ma, aa), (mb, ab), (mc, _) = await asyncio.gather(
        _collect(wa, total, sends), _collect(wb, total, sends), _collect(wc, total, 0)
    )
    problems: list[str] = []
    for name, got in (("a", ma), ("b", mb), ("c", mc)):
        seqs = [m["seq"] for m in got]
        if seqs != list(range(1, total + 1)):
            problems.append(f"member {name} got seqs out of order or with gaps: {seqs[:20]}...")
    if any(x["duplicate"] for x in aa + ab):
        problems.append("a first send was acked as a duplicate")
    first = aa[0]
    await _send(wa, cid, "a0", "again")
    _, again = await _collect(wa, 0, 1)
    same = again[0]["seq"] == first["seq"] and again[0]["message_id"] == first["message_id"]
    if not again[0]["duplicate"] or not same:
        problems.append(f"resend of a0 not acked as the duplicate of {first}: {again[0]}")
    wo = await _open(socks[0], outsider)
    await _send(wo, cid, "o0", "not a member")
    refused = json.loads(await asyncio.wait_for(wo.recv(), 30))
    if refused.get("code") != "not_member":
        problems.append(f"a non-member's send was not refused with not_member: {refused}")
    await wo.close()
    conn = await asyncpg.connect(stack.database_url)
    try:
        rows = await conn.fetch(
            "SELECT seq, client_msg_id FROM messages WHERE conversation_id = $1 ORDER BY seq", cid
        )
        last_seq = await conn.fetchval("SELECT last_seq FROM conversations WHERE id = $1", cid)
    finally:
        await conn.close()
    seqs = [r["seq"] for r in rows]
    cmids = [r["client_msg_id"] for r in rows]
    if seqs != list(range(1, total + 1)) or last_seq != total:
        problems.append(f"stored seqs not gapless 1..{total} (last_seq {last_seq}): {seqs[:20]}...")
    if len(set(cmids)) != len(cmids) or cmids.count("a0") != 1:
        problems.append("a client_msg_id was stored twice")
    print(
        f"group {cid}: {total} sends from two processes acked {len(aa) + len(ab)}; members got"
        f" {len(ma)}/{len(mb)}/{len(mc)} messages; stored {len(rows)} rows, seqs 1..{max(seqs, default=0)},"
        f" last_seq {last_seq}; resend of a0 acked duplicate={again[0]['duplicate']} seq={again[0]['seq']}"
        f" (first seq {first['seq']}); a non-member's send: {refused.get('code')}"
    )
    for ws in (wa, wb, wc):
        await ws.close()
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.node_peer_check", description=__doc__)
    parser.add_argument("--sends", type=int, default=200, help="sends per sender")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="chatd-nodepeer-"))
    work.chmod(0o755)
    stack = chatstack.start(work / "stack", 1)
    procs = Procs(work / "node")
    try:
        _, socks, _ = node_durable.start(stack, procs, 2)
        problems = asyncio.run(check(stack, socks, args.sends))
    finally:
        procs.stop()
        stack.down()
    for problem in problems:
        print("FAIL:", problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
