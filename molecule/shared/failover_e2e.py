#!/usr/bin/env python3
"""Clients for the failover rehearsal (molecule/shared/verify_failover.yml), through nginx.

    failover_e2e.py traffic --state E2E_STATE --log FILE --stop-file FILE
    failover_e2e.py check   --state E2E_STATE --log FILE --crashed-at EPOCH --mode sync|async
                            [--window SECONDS] [--out FILE]

traffic: both users of e2e.py's state send one message after another, each resent with the
same client_msg_id (and the same frame id, so an `error` names it) until it is acked: after an
`unavailable`, a lost connection (reconnecting) or 15 s without an answer. Each ack is appended
to --log as one JSON line when it arrives (client_msg_id, seq, the time it was sent first and
the time it was acked), so the playbook can wait for acks before and after the crash. Stops at
the next message once --stop-file exists.

check: the conversation's history through nginx (served by whichever host is primary now)
against every ack in --log. sync: every acked message is there exactly once. async: the acked
messages that are missing must all have been acked within --window seconds before the crash
(the documented loss window); how many is reported. Both: seqs are gapless, no message is
there twice, and the time without service is measured: from the crash to the first ack after
it, and the longest gap between two acks. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from pathlib import Path

import httpx
import websockets
from e2e import Client, tls, whole_history


async def send_until_acked(client: Client, cid: int, body: str, deadline: float, stats: dict) -> dict:
    cmid = str(uuid.uuid4())
    frame = json.dumps({"type": "send", "id": cmid, "conversation_id": cid, "client_msg_id": cmid, "body": body})
    while time.monotonic() < deadline:
        try:
            if client.closed:
                await client.connect(deadline)
                stats["reconnects"] += 1
            await client.ws.send(frame)
            answer_by = time.monotonic() + 15
            while (left := answer_by - time.monotonic()) > 0:
                reply = await asyncio.wait_for(client.frames.get(), left)
                if reply.get("type") == "ack" and reply.get("client_msg_id") == cmid:
                    return reply
                if reply.get("type") == "error" and reply.get("ref") == cmid:
                    stats["errors"][reply["code"]] = stats["errors"].get(reply["code"], 0) + 1
                    break
            else:
                stats["timeouts"] += 1
        except (websockets.ConnectionClosed, asyncio.TimeoutError, SystemExit, OSError):
            pass
        await asyncio.sleep(0.3)
    raise SystemExit(f"{client.user['username']}: {body!r} never acked")


async def traffic(args: argparse.Namespace) -> dict:
    state = json.loads(Path(args.state).read_text())
    cid = state["conversation_id"]
    deadline = time.monotonic() + args.timeout
    clients = [Client(state["base"], state["users"][who], state.get("cafile")) for who in ("alice", "bob")]
    stats: dict = {"reconnects": 0, "timeouts": 0, "errors": {}}
    log = Path(args.log).open("a")
    for c in clients:
        await c.connect(deadline)

    async def keep_sending(c: Client) -> int:
        n = 0
        while not Path(args.stop_file).exists():
            n += 1
            sent = time.time()
            ack = await send_until_acked(c, cid, f"failover {c.user['username']} {n} {sent:.3f}", deadline, stats)
            log.write(json.dumps({"client_msg_id": ack["client_msg_id"], "seq": ack["seq"], "sent": sent,
                                  "acked": time.time(), "duplicate": ack.get("duplicate", False)}) + "\n")
            log.flush()
            await asyncio.sleep(args.interval)
        return n

    counts = await asyncio.gather(*(keep_sending(c) for c in clients))
    for c in clients:
        await c.ws.close()
    return {"traffic": "ok", "acked": sum(counts), **stats}


async def check(args: argparse.Namespace) -> dict:
    state = json.loads(Path(args.state).read_text())
    cid, crashed = state["conversation_id"], args.crashed_at
    acks = [json.loads(line) for line in Path(args.log).read_text().splitlines() if line.strip()]
    deadline = time.monotonic() + args.timeout
    async with httpx.AsyncClient(base_url=state["base"], timeout=15, verify=tls(state.get("cafile"))) as http:
        history = await whole_history(http, cid, state["users"]["alice"]["token"], deadline)
    seqs = [m["seq"] for m in history]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))) and seqs[0] == 1, "seqs are not 1..N without gaps"
    ids = [m["client_msg_id"] for m in history if m.get("client_msg_id")]
    twice = sorted({c for c in ids if ids.count(c) > 1})
    assert not twice, f"stored more than once: {twice}"
    present = set(ids)
    lost = [a for a in acks if a["client_msg_id"] not in present]
    if args.mode == "sync":
        assert not lost, f"acked, and missing after the failover (synchronous replication): {lost}"
    else:
        outside = [a for a in lost if not crashed - args.window <= a["acked"] <= crashed]
        assert not outside, f"lost outside the {args.window} s before the crash: {outside}"
    after = sorted(a["acked"] for a in acks if a["acked"] > crashed)
    assert any(a["sent"] > crashed for a in acks), "no message sent after the crash was acked"
    times = sorted(a["acked"] for a in acks)
    gaps = [b - a for a, b in zip(times, times[1:])]
    around = [a for a in acks if crashed - 60 < a["acked"]]
    # What an ack costs in this mode (round trip through nginx, the worker, the commit): the
    # sends before the crash, which no failover slowed down.
    rtts = sorted((a["acked"] - a["sent"]) * 1000 for a in acks if a["acked"] <= crashed)
    result = {
        "check": "ok", "mode": args.mode, "acked": len(acks), "acked_before_crash": sum(a["acked"] <= crashed for a in acks),
        "lost": len(lost), "lost_ids": [a["client_msg_id"] for a in lost], "history": len(history),
        "duplicates_acked_again": sum(a["duplicate"] for a in acks),
        "first_ack_after_crash_s": round(after[0] - crashed, 1),
        "longest_gap_between_acks_s": round(max(gaps), 1) if gaps else None,
        "acks_in_the_minute_before": sum(a["acked"] <= crashed for a in around),
        "lost_acked_s_before_crash": [round(crashed - a["acked"], 2) for a in lost],
        "ack_ms_before_crash": {"median": round(rtts[len(rtts) // 2]), "p90": round(rtts[len(rtts) * 9 // 10])}
        if rtts else None,
    }
    if args.out:
        Path(args.out).write_text(json.dumps(result))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("traffic")
    p.add_argument("--state", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--stop-file", required=True)
    p.add_argument("--interval", type=float, default=0.2, help="under the send rate limit (50 per 10 s)")
    p.add_argument("--timeout", type=float, default=900)
    p = sub.add_parser("check")
    p.add_argument("--state", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--crashed-at", type=float, required=True)
    p.add_argument("--mode", choices=["sync", "async"], required=True)
    p.add_argument("--window", type=float, default=1.0)
    p.add_argument("--out")
    p.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args()
    out = asyncio.run({"traffic": traffic, "check": check}[args.cmd](args))
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
