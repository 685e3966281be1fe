#!/usr/bin/env python3
"""The restore rehearsal's clients (molecule/shared/verify_restore.yml), through nginx.

    restore_e2e.py send     --out FILE --name NAME [--count N]   (acked messages, kept as NAME)
    restore_e2e.py mark     --out FILE --name NAME               (the history now, and a time after it)
    restore_e2e.py exactly  --out FILE --name NAME --absent NAME (after a restore to that time)
    restore_e2e.py before   --state E2E_STATE --out FILE         (then the dump is taken)
    restore_e2e.py after    --out FILE                           (then the data hosts are replaced and restored)
    restore_e2e.py check    --out FILE                           (after restoring the dump)
    restore_e2e.py latest   --out FILE --present NAME... --tail NAME   (after a restore to the latest point)

They reuse the users, tokens and conversation of e2e.py's state (tokens live in Postgres, so
they survive the restore; no login is needed, which nginx's limits would slow after e2e.py
edge). Point-in-time recovery: send and mark note what was acked and the history at a time T
(a second after the last ack, a second before the next send); exactly checks that after a
restore to T the history is that, message for message, and none of what came after. latest
checks that after a restore to the latest point every message of the --present groups is there
exactly once and that of the --tail group (sent after the last wait for the archive) a prefix
is, and says how many were lost. The dump: before: alice sends messages, bob and alice mark
some read; every message acked so far (e2e.py's and these) must survive. after: more messages
and a later read mark, acked after the backup: a restore loses them, and the check says so
rather than hiding it. check: each message acked before the backup is in the history exactly
once, none acked after it is, the read pointers are as they were at the backup, and a new
message round-trips in real time. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import time
import uuid
from pathlib import Path

import httpx
from e2e import Client, http_retry, tls, whole_history


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
    """The conversation's whole history (page by page, oldest first), and each user's read
    pointer in it."""
    cid, pointers = state["conversation_id"], {}
    async with httpx.AsyncClient(base_url=state["base"], timeout=10, verify=tls(state.get("cafile"))) as http:
        history = await whole_history(http, cid, state["users"]["alice"]["token"], deadline)
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


def texts(history: list[dict]) -> list[str]:
    return [m["client_msg_id"] for m in history if m.get("client_msg_id")]


async def round_trip(state: dict, deadline: float, label: str) -> int:
    """A new message is acked and delivered live through nginx; its seq."""
    alice, bob = await connected(state, deadline)
    body = f"{label} {time.time():.3f}"
    _, seq = await send(alice, state["conversation_id"], body)
    frame = await bob.expect("message", "body", body)
    assert frame["seq"] == seq, (frame, seq)
    for c in (alice, bob):
        await c.ws.close()
    return seq


async def send_more(args: argparse.Namespace) -> dict:
    state = json.loads(Path(args.out).read_text())
    deadline = time.monotonic() + args.timeout
    alice, bob = await connected(state, deadline)
    sent = [await send(alice, state["conversation_id"], f"{args.name} {i}") for i in range(args.count)]
    for c in (alice, bob):
        await c.ws.close()
    state.setdefault("groups", {}).setdefault(args.name, []).extend(cmid for cmid, _ in sent)
    Path(args.out).write_text(json.dumps(state))
    return {"send": args.name, "acked": len(sent), "last_seq": sent[-1][1]}


async def mark(args: argparse.Namespace) -> dict:
    """The history now, and a time T a second after it (a second before anything else is sent)."""
    state = json.loads(Path(args.out).read_text())
    history, _ = await server_view(state, time.monotonic() + args.timeout)
    await asyncio.sleep(1.1)
    moment = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    await asyncio.sleep(1.1)
    state.setdefault("marks", {})[args.name] = {"ids": texts(history), "last_seq": history[-1]["seq"],
                                               "time": moment.isoformat(sep=" ")}
    Path(args.out).write_text(json.dumps(state))
    return {"mark": args.name, "time": moment.isoformat(sep=" "), "messages": len(history)}


async def exactly(args: argparse.Namespace) -> dict:
    """After a restore to a mark's time: the history is exactly what it was then."""
    state = json.loads(Path(args.out).read_text())
    deadline = time.monotonic() + args.timeout
    history, _ = await server_view(state, deadline)
    then, now = state["marks"][args.name], texts(history)
    seqs = [m["seq"] for m in history]
    assert seqs == list(range(1, len(seqs) + 1)), f"seqs not gapless: {seqs[:5]}...{seqs[-5:]}"
    assert now == then["ids"], (
        f"restored to {then['time']}: {len(now)} messages, {len(then['ids'])} then; "
        f"missing {sorted(set(then['ids']) - set(now))[:10]}, extra {sorted(set(now) - set(then['ids']))[:10]}")
    after = [c for name in args.absent for c in state["groups"][name] if c in now]
    assert not after, f"acked after {then['time']} and restored: {after}"
    seq = await round_trip(state, deadline, f"after the restore to {then['time']}")
    assert seq == then["last_seq"] + 1, (seq, then["last_seq"])
    return {"exactly": args.name, "time": then["time"], "messages": len(now), "new_seq": seq,
            "acked_after_and_gone": sum(len(state["groups"][name]) for name in args.absent)}


async def latest(args: argparse.Namespace) -> dict:
    """After a restore to the latest point: every message of the present groups, once; of the
    tail (sent after the last wait for the archive) a prefix; how many of it were lost."""
    state = json.loads(Path(args.out).read_text())
    deadline = time.monotonic() + args.timeout
    history, _ = await server_view(state, deadline)
    now = texts(history)
    seqs = [m["seq"] for m in history]
    assert seqs == list(range(1, len(seqs) + 1)), f"seqs not gapless: {seqs[:5]}...{seqs[-5:]}"
    expected = [c for name in args.present for c in (state["groups"].get(name) or state["marks"][name]["ids"])]
    missing = [c for c in expected if now.count(c) != 1]
    assert not missing, f"acked before the last archived WAL and missing (or there twice): {missing}"
    tail = state["groups"][args.tail]
    kept = [c for c in tail if c in now]
    assert kept == tail[: len(kept)], f"not a prefix of the tail: {kept}"
    await round_trip(state, deadline, "after the restore to the latest point")
    return {"latest": "ok", "messages": len(now), "expected_present": len(expected),
            "tail_sent": len(tail), "tail_restored": len(kept), "tail_lost": len(tail) - len(kept)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("before")
    p.add_argument("--state", required=True, help="e2e.py's state file")
    p.add_argument("--out", required=True)
    for name in ("after", "check"):
        p = sub.add_parser(name)
        p.add_argument("--out", required=True)
    p = sub.add_parser("send")
    p.add_argument("--out", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--count", type=int, default=5)
    p = sub.add_parser("mark")
    p.add_argument("--out", required=True)
    p.add_argument("--name", required=True)
    p = sub.add_parser("exactly")
    p.add_argument("--out", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--absent", nargs="+", default=[])
    p = sub.add_parser("latest")
    p.add_argument("--out", required=True)
    p.add_argument("--present", nargs="+", required=True)
    p.add_argument("--tail", required=True)
    for p in sub.choices.values():
        p.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args()
    commands = {"before": before, "after": after, "check": check, "send": send_more, "mark": mark,
                "exactly": exactly, "latest": latest}
    out = asyncio.run(commands[args.cmd](args))
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
