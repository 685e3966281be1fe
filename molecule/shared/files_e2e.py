#!/usr/bin/env python3
"""Attachments on a deployed chatd, through nginx (issue 21).

    files_e2e.py send  --state E2E_STATE --out FILE
    files_e2e.py check --state E2E_STATE --out FILE

send: alice uploads a file (three chunks of random bytes) and sends it in e2e.py's
conversation; bob downloads it twice (the first fills the app host's download cache, the
second is served from it by nginx) and both must equal what was uploaded; writes the file's
id, size and SHA-256 to --out.  check: bob downloads it again and it must still be equal
(after a backup and restore: the bytes live in PostgreSQL, the cache is not backed up).
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import time
import uuid
from pathlib import Path

import httpx
from e2e import Client, http_retry, tls

SIZE = 700_000


async def download(state: dict, file_id: int, deadline: float) -> bytes:
    async with httpx.AsyncClient(base_url=state["base"], timeout=30, verify=tls(state.get("cafile"))) as http:
        r = await http_retry(http, "GET", f"/v1/files/{file_id}", deadline,
                             headers={"Authorization": f"Bearer {state['users']['bob']['token']}"})
        assert r.status_code == 200, (r.status_code, r.text)
        assert r.headers["x-content-type-options"] == "nosniff", r.headers
        assert r.headers["content-disposition"].startswith("attachment;"), r.headers
        return r.content


async def send(args: argparse.Namespace) -> dict:
    state = json.loads(Path(args.state).read_text())
    deadline, cid = time.monotonic() + args.timeout, state["conversation_id"]
    data = os.urandom(SIZE)
    async with httpx.AsyncClient(base_url=state["base"], timeout=30, verify=tls(state.get("cafile"))) as http:
        r = await http_retry(http, "POST", "/v1/files?name=e2e.bin", deadline, content=data,
                             headers={"Authorization": f"Bearer {state['users']['alice']['token']}"})
        assert r.status_code == 201, (r.status_code, r.text)
        file = r.json()["file"]
    alice = Client(state["base"], state["users"]["alice"], state.get("cafile"))
    await alice.connect(deadline)
    cmid = str(uuid.uuid4())
    await alice.ws.send(json.dumps({"type": "send", "conversation_id": cid, "client_msg_id": cmid,
                                    "attachments": [file["id"]]}))
    await alice.expect("ack", "client_msg_id", cmid)
    await alice.ws.close()
    first = await download(state, file["id"], deadline)
    second = await download(state, file["id"], deadline)
    assert first == data, "the first download differs from the upload"
    assert second == data, "the second download (from the cache) differs from the upload"
    out = {"file_id": file["id"], "size": SIZE, "sha256": hashlib.sha256(data).hexdigest()}
    Path(args.out).write_text(json.dumps(out))
    return {"send": "ok", **out}


async def check(args: argparse.Namespace) -> dict:
    state = json.loads(Path(args.state).read_text())
    sent = json.loads(Path(args.out).read_text())
    got = await download(state, sent["file_id"], time.monotonic() + args.timeout)
    assert hashlib.sha256(got).hexdigest() == sent["sha256"], "the file's bytes differ"
    return {"check": "ok", **sent}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("send", "check"):
        p = sub.add_parser(name)
        p.add_argument("--state", required=True, help="e2e.py's state file")
        p.add_argument("--out", required=True)
        p.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args()
    out = asyncio.run({"send": send, "check": check}[args.cmd](args))
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
