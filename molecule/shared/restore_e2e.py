#!/usr/bin/env python3
"""The restore rehearsal's clients (molecule/shared/verify_restore.yml), through nginx.

    restore_e2e.py before --state E2E_STATE --out FILE   (then the backup is taken)
    restore_e2e.py after  --out FILE                     (then the data host is replaced and restored)
    restore_e2e.py check  --out FILE

They reuse the users, tokens and conversation of e2e.py's state (tokens live in Postgres, so
they survive the restore; no login is needed, which nginx's limits would slow after e2e.py
edge). before: alice sends messages, bob and alice mark some read; every message acked so far
(e2e.py's and these) must survive. after: more messages and a later read mark, acked after the
backup: a restore loses them, and the check says so rather than hiding it. check: each message
acked before the backup is in the history exactly once, none acked after it is, the read
pointers are as they were at the backup, and a new message round-trips in real time.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from pathlib import Path

import httpx
from e2e import Client, http_retry, tls


async def send(client: Client, cid: int, body: str) -> tuple[str, int]:
    cmid = str(uuid.uuid4())
    frame = {"type": "send", "conversation_id": cid, "client_msg_id": cmid, "body": body}
    await client.ws.send(json.dumps(frame))
    ack = await client.expect("ack", "client_msg_id", cmid)
    return cmid, ack["seq"]


async def mark_read(client: Client, cid: int, seq: int) -> None:
    ref = str(uuid.uuid4())
    await client.ws.send(json.dumps({"type": "read", "id": ref, "conversation_id": cid, "seq": seq}))
    frame = await client.expect("read_state", "ref", ref)
    assert frame["last_read_seq"] == seq, frame


async def connected(state: dict, deadline: float) -> tuple[Client, Client]:
    alice = Client(state["base"], state["users"]["alice"], state.get("cafile"))
    bob = Client(state["base"], state["users"]["bob"], state.get("cafile"))
    await alice.connect(deadline)
    await bob.connect(deadline)
    return alice, bob


async def server_view(state: dict, deadline: float) -> tuple[list[dict], dict[str, int]]:
    """The conversation's whole history, and each user's read pointer in it."""
    cid, pointers = state["conversation_id"], {}
    async with httpx.AsyncClient(base_url=state["base"], timeout=10, verify=tls(state.get("cafile"))) as http:
        r = await http_retry(http, "GET", f"/v1/conversations/{cid}/messages?limit=200", deadline,
                             headers={"Authorization": f"Bearer {state['users']['alice']['token']}"})
        assert r.status_code == 200, (r.status_code, r.text)
        history = r.json()["messages"]
        for who in ("alice", "bob"):
            r = await http_retry(http, "GET", "/v1/me/read_state", deadline,
                                 headers={"Authorization": f"Bearer {state['users'][who]['token']}"})
            assert r.status_code == 200, (r.status_code, r.text)
            [mine] = [c for c in r.json()["conversations"] if c["conversation_id"] == cid]
            pointers[who] = mine["last_read_seq"]
    return history, pointers


async def before(args: argparse.Namespace) -> dict:
    state = json.loads(Path(args.state).read_text())
    deadline, cid = time.monotonic() + args.timeout, state["conversation_id"]
    alice, bob = await connected(state, deadline)
    sent = [await send(alice, cid, f"before the backup {i}") for i in range(5)]
    await mark_read(bob, cid, sent[2][1])
    await mark_read(alice, cid, sent[-1][1])
    for c in (alice, bob):
        await c.ws.close()
    history, pointers = await server_view(state, deadline)
    assert pointers == {"alice": sent[-1][1], "bob": sent[2][1]}, pointers
    acked = state["sent"] + [cmid for cmid, _ in sent]
    ids = [m["client_msg_id"] for m in history]
    assert all(c in ids for c in acked), "a message acked before the backup is missing already"
    rehearsal = {**state, "before": {"acked": acked, "pointers": pointers, "last_seq": history[-1]["seq"]}}
    Path(args.out).write_text(json.dumps(rehearsal))
    return {"before": "ok", "messages": len(history), "pointers": pointers}


async def after(args: argparse.Namespace) -> dict:
    state = json.loads(Path(args.out).read_text())
    deadline, cid = time.monotonic() + args.timeout, state["conversation_id"]
    alice, bob = await connected(state, deadline)
    sent = [await send(alice, cid, f"after the backup {i}") for i in range(3)]
    await mark_read(bob, cid, sent[-1][1])
    for c in (alice, bob):
        await c.ws.close()
    state["after"] = {"acked": [cmid for cmid, _ in sent], "bob_read": sent[-1][1]}
    Path(args.out).write_text(json.dumps(state))
    return {"after": "ok", "acked_after_backup": len(sent)}


async def check(args: argparse.Namespace) -> dict:
    state = json.loads(Path(args.out).read_text())
    deadline, cid = time.monotonic() + args.timeout, state["conversation_id"]
    history, pointers = await server_view(state, deadline)
    ids = [m["client_msg_id"] for m in history]
    seqs = [m["seq"] for m in history]
    assert seqs == list(range(1, len(seqs) + 1)), f"seqs not gapless: {seqs}"
    for cmid in state["before"]["acked"]:
        assert ids.count(cmid) == 1, f"{cmid}, acked before the backup, is there {ids.count(cmid)} times"
    lost = [c for c in state["after"]["acked"] if c in ids]
    assert not lost, f"acked after the backup yet restored (was the backup taken later?): {lost}"
    assert seqs[-1] == state["before"]["last_seq"], (seqs[-1], state["before"]["last_seq"])
    assert pointers == state["before"]["pointers"], (pointers, state["before"]["pointers"])
    # Serving: a new message is acked and delivered live through nginx. Its seq follows the
    # restored history, so it reuses a seq that a lost message had (docs/operations.md).
    alice, bob = await connected(state, deadline)
    body = f"after the restore {time.time():.3f}"
    cmid, seq = await send(alice, cid, body)
    frame = await bob.expect("message", "body", body)
    assert frame["body"] == body and seq == state["before"]["last_seq"] + 1, (frame, seq)
    await mark_read(bob, cid, seq)
    for c in (alice, bob):
        await c.ws.close()
    return {"check": "ok", "restored": len(history), "lost_after_backup": len(state["after"]["acked"]),
            "pointers": pointers, "new_seq": seq}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("before")
    p.add_argument("--state", required=True, help="e2e.py's state file")
    p.add_argument("--out", required=True)
    for name in ("after", "check"):
        p = sub.add_parser(name)
        p.add_argument("--out", required=True)
    for p in sub.choices.values():
        p.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args()
    out = asyncio.run({"before": before, "after": after, "check": check}[args.cmd](args))
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
