"""Attachments against the real stack: upload, send, download through nginx's internal
location, who may download, limits, and what is left after a broken upload."""

from __future__ import annotations

import asyncio
import io
import itertools
import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from PIL import Image

from chatd.devstack import Stack
from tests.conftest import Worker
from tests.helpers import Api, Frame, User, Ws

MIB = 1024 * 1024


def png(width: int = 800, height: int = 600) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


async def upload(api: Api, user: User, data: bytes, name: str = "picture.png") -> Frame:
    response = await api.call("POST", "/v1/files", user.token, params={"name": name}, content=data)
    assert response.status_code == 201, response.text
    file: Frame = response.json()["file"]
    return file


async def send_files(ws: Ws, cid: int, file_ids: list[int], body: str = "") -> Frame:
    cmid = uuid.uuid4().hex
    frame: dict[str, Any] = {"type": "send", "conversation_id": cid, "client_msg_id": cmid}
    frame["attachments"] = file_ids
    if body:
        frame["body"] = body
    await ws.send_json(frame)
    return await ws.expect(
        lambda f: (f["type"] == "ack" and f["client_msg_id"] == cmid) or f["type"] == "error"
    )


async def test_upload_send_and_download_through_nginx(nginx: Api, stack: Stack) -> None:
    alice, bob = await nginx.user("fa"), await nginx.user("fb")
    cid = await nginx.direct(alice, bob)
    data = png()
    file = await upload(nginx, alice, data, name="../../etc/Screen shot.png")
    assert file["content_type"] == "image/png"
    assert (file["width"], file["height"], file["thumbnail"]) == (800, 600, True)
    assert file["name"] == "Screen shot.png"  # no path
    a = await Ws.connect(stack.url, alice.token)
    b = await Ws.connect(stack.url, bob.token)
    try:
        ack = await send_files(a, cid, [file["id"]], "look")
        assert ack["type"] == "ack", ack
        (received,) = await b.wait_seq(cid, ack["seq"])
        assert received["body"] == "look"
        assert received["attachments"] == [file]
    finally:
        await a.close()
        await b.close()
    (stored,) = await nginx.history(bob, cid)
    assert stored["attachments"] == [file]

    got = await nginx.call("GET", f"/v1/files/{file['id']}", bob.token)
    assert got.status_code == 200, got.text
    assert got.content == data
    assert got.headers["content-type"] == "image/png"
    assert got.headers["content-disposition"].startswith("inline;")
    assert got.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in got.headers["content-security-policy"]
    assert "x-accel-redirect" not in got.headers
    thumb = await nginx.call("GET", f"/v1/files/{file['id']}/thumbnail", bob.token)
    assert thumb.status_code == 200, thumb.text
    with Image.open(io.BytesIO(thumb.content)) as image:
        assert image.size == (320, 240)


async def test_type_comes_from_the_content_not_the_name(nginx: Api) -> None:
    alice = await nginx.user("fa")
    page = b"<!doctype html><script>alert(1)</script>"
    file = await upload(nginx, alice, page, name="innocent.png")
    assert file["content_type"] == "text/plain"
    assert file["thumbnail"] is False
    assert "width" not in file
    got = await nginx.call("GET", f"/v1/files/{file['id']}", alice.token)
    assert got.status_code == 200
    assert got.content == page
    assert got.headers["content-type"] == "text/plain; charset=utf-8"
    assert got.headers["content-disposition"].startswith("attachment;")
    # a GIF that is also a page is an image, served as one
    gif = await upload(nginx, alice, b"GIF89a<html><script>alert(1)</script></html>", name="a.html")
    assert gif["content_type"] == "image/gif"


async def test_only_members_download(nginx: Api, stack: Stack, db: asyncpg.Connection) -> None:
    alice, bob, carol = await nginx.user("fa"), await nginx.user("fb"), await nginx.user("fc")
    cid = await nginx.group(alice, [bob], "files")
    file = await upload(nginx, alice, png(40, 30))
    unsent = await upload(nginx, alice, png(20, 10))
    a = await Ws.connect(stack.url, alice.token)
    try:
        assert (await send_files(a, cid, [file["id"]]))["type"] == "ack"
    finally:
        await a.close()

    async def status(user: User, path: str) -> int:
        response = await nginx.call("GET", path, user.token)
        if response.status_code != 200:
            assert response.json()["error"]["code"] == "not_found", response.text
        return response.status_code

    assert await status(bob, f"/v1/files/{file['id']}") == 200
    assert await status(bob, f"/v1/files/{file['id']}/thumbnail") == 200
    # an outsider: the direct URL, and ids guessed around it
    assert await status(carol, f"/v1/files/{file['id']}") == 404
    assert await status(carol, f"/v1/files/{file['id']}/thumbnail") == 404
    for guess in (file["id"] + 1, file["id"] + 1000, 0, 2**63, 10**40):
        assert await status(carol, f"/v1/files/{guess}") == 404
    # an upload nobody sent yet is its uploader's only
    assert await status(bob, f"/v1/files/{unsent['id']}") == 404
    assert await status(alice, f"/v1/files/{unsent['id']}") == 200
    # the internal location is not reachable from outside, even with the real key
    key = await db.fetchval("SELECT storage_key FROM files WHERE id = $1", file["id"])
    inside = await nginx.call("GET", f"/.chatd-files/{key}/0", bob.token)
    assert inside.status_code == 404
    assert inside.content != png(40, 30)
    # nor is sending someone else's file
    b = await Ws.connect(stack.url, bob.token)
    try:
        refused = await send_files(b, cid, [unsent["id"]])
        assert refused["type"] == "error"
        assert refused["code"] == "not_found"
    finally:
        await b.close()
    # removed from the group: refused from then on
    removed = await nginx.call("DELETE", f"/v1/conversations/{cid}/members/{bob.id}", alice.token)
    assert removed.status_code == 200, removed.text
    assert await status(bob, f"/v1/files/{file['id']}") == 404
    assert await status(bob, f"/v1/files/{file['id']}/thumbnail") == 404
    assert await status(alice, f"/v1/files/{file['id']}") == 200


async def test_bad_uploads_and_sends(nginx: Api, stack: Stack) -> None:
    alice, bob = await nginx.user("fa"), await nginx.user("fb")
    cid = await nginx.direct(alice, bob)
    empty = await nginx.call("POST", "/v1/files", alice.token, content=b"")
    assert empty.status_code == 400
    assert empty.json()["error"]["code"] == "bad_request"
    anonymous = await nginx.call("POST", "/v1/files", None, content=b"x")
    assert anonymous.status_code == 401
    files = [await upload(nginx, alice, f"file {i}".encode(), f"{i}.txt") for i in range(11)]
    a = await Ws.connect(stack.url, alice.token)
    try:
        for ids, code in (
            ([f["id"] for f in files], "bad_request"),  # 11 > 10
            ([files[0]["id"], files[0]["id"]], "bad_request"),
            ([files[0]["id"], 10**15], "not_found"),
            (["x"], "bad_request"),
        ):
            refused = await send_files(a, cid, ids)  # type: ignore[arg-type]
            assert refused["type"] == "error", refused
            assert refused["code"] == code, refused
        ok = await send_files(a, cid, [f["id"] for f in files[:10]])
        assert ok["type"] == "ack", ok
        # the same file again, in another message: allowed (it is the uploader's)
        again = await send_files(a, cid, [files[0]["id"]], "again")
        assert again["type"] == "ack", again
    finally:
        await a.close()
    listed = [m["attachments"] for m in await nginx.history(bob, cid)]
    assert [len(x) for x in listed] == [10, 1]
    assert [f["name"] for f in listed[0]] == [f"{i}.txt" for i in range(10)]


# -- limits and memory ---------------------------------------------------------------------
def rss_peak_reset(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(field)


async def body_of(size: int, chunk: int = MIB) -> AsyncIterator[bytes]:
    block = os.urandom(chunk)
    sent = 0
    while sent < size:
        yield block[: min(chunk, size - sent)]
        sent += chunk


async def test_upload_over_the_limit_refused_without_memory_growth(
    nginx: Api, stack: Stack, spawn_worker: Callable[..., Worker]
) -> None:
    alice = await nginx.user("fa")
    limit = 25 * MIB  # the default
    # nginx refuses what says it is too large before a worker sees a byte
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.http_port)
    writer.write(
        f"POST /v1/files HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {alice.token}\r\n"
        f"Content-Length: {10 * limit}\r\n\r\n".encode()
    )
    answer = await reader.read(4096)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 413"), answer
    assert b'"code":"too_large"' in answer, answer
    # a worker of its own, so its memory is this upload's alone; streamed without a length
    worker = spawn_worker()
    pid = worker.proc.pid
    direct = Api(worker.url)
    try:
        await upload(direct, alice, b"warm up: the first request loads modules")
        rss_peak_reset(pid)
        before = status_kib(pid, "VmRSS")
        try:
            response = await direct.call("POST", "/v1/files", alice.token, content=body_of(10 * limit))
            assert response.status_code == 413, response.text
            assert response.json()["error"]["code"] == "too_large"
        except httpx.TransportError:
            pass  # the worker answered and closed while the client was still writing
        peak = status_kib(pid, "VmHWM")
        growth_mib = (peak - before) / 1024
        print(
            f"\nworker RSS {before / 1024:.1f} MiB before, peak {peak / 1024:.1f} MiB "
            f"uploading {10 * limit // MIB} MiB (limit {limit // MIB} MiB): +{growth_mib:.1f} MiB"
        )
        assert growth_mib < 8, growth_mib  # far below the 25 MiB one buffered file would take
        # a file at the limit is taken, and still not held in memory
        rss_peak_reset(pid)
        before = status_kib(pid, "VmRSS")
        response = await direct.call("POST", "/v1/files", alice.token, content=body_of(limit))
        assert response.status_code == 201, response.text
        assert response.json()["file"]["size"] == limit
        growth_mib = (status_kib(pid, "VmHWM") - before) / 1024
        print(f"worker RSS peak +{growth_mib:.1f} MiB storing a {limit // MIB} MiB file")
        assert growth_mib < 8, growth_mib
    finally:
        await direct.http.aclose()


# -- what a broken upload leaves -----------------------------------------------------------
def spools(pid: int) -> list[str]:
    """The worker's open upload spool files (unlinked files under the temp directory)."""
    found = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if "chatd-upload-" in target:
            found.append(target)
    return found


async def wait_for(check: Callable[[], bool], timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        for _ in itertools.count():
            if check():
                return
            await asyncio.sleep(0.02)


async def test_interrupted_upload_leaves_nothing(
    nginx: Api, stack: Stack, spawn_worker: Callable[..., Worker], db: asyncpg.Connection
) -> None:
    alice = await nginx.user("fa")
    worker = spawn_worker()
    pid = worker.proc.pid
    head = (
        f"POST /v1/files?name=big.bin HTTP/1.1\r\nHost: localhost\r\n"
        f"Authorization: Bearer {alice.token}\r\nContent-Length: {20 * MIB}\r\n\r\n"
    ).encode()
    for port in (worker.port, stack.http_port):  # straight to a worker, and through nginx
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(head + os.urandom(4 * MIB))
            if port == worker.port:
                await wait_for(lambda: bool(spools(pid)))  # the worker is mid-upload
        if port == worker.port:
            await wait_for(lambda: not spools(pid))  # it gave up on it
    # a complete upload after them: once it is stored, the broken ones would be too
    await upload(nginx, alice, b"complete")
    assert await db.fetchval("SELECT count(*) FROM files WHERE uploader_id = $1", alice.id) == 1
    assert spools(pid) == []


async def test_unsent_uploads_are_deleted_after_the_ttl(
    nginx: Api, stack: Stack, spawn_worker: Callable[..., Worker], db: asyncpg.Connection
) -> None:
    alice, bob = await nginx.user("fa"), await nginx.user("fb")
    cid = await nginx.direct(alice, bob)
    sent = await upload(nginx, alice, b"kept: it is sent")
    unsent = await upload(nginx, alice, b"deleted: never sent")
    a = await Ws.connect(stack.url, alice.token)
    try:
        assert (await send_files(a, cid, [sent["id"]]))["type"] == "ack"
    finally:
        await a.close()
    spawn_worker(CHATD_UPLOAD_UNSENT_TTL_S="1")  # sweeps every 0.5 s

    async with asyncio.timeout(20):
        for _ in itertools.count():
            if not await db.fetchval("SELECT count(*) FROM files WHERE id = $1", unsent["id"]):
                break
            await asyncio.sleep(0.05)
    assert await db.fetchval("SELECT count(*) FROM file_chunks WHERE file_id = $1", unsent["id"]) == 0
    got = await nginx.call("GET", f"/v1/files/{sent['id']}", bob.token)
    assert got.content == b"kept: it is sent"


async def test_deleting_messages_deletes_their_files(
    nginx: Api, stack: Stack, db: asyncpg.Connection
) -> None:
    """The hook the delete of a message calls in its transaction (chatd_delete_message_files)."""
    alice, bob = await nginx.user("fa"), await nginx.user("fb")
    cid = await nginx.direct(alice, bob)
    only = await upload(nginx, alice, b"only in the first message")
    shared = await upload(nginx, alice, b"in both messages")
    a = await Ws.connect(stack.url, alice.token)
    try:
        first = await send_files(a, cid, [only["id"], shared["id"]])
        second = await send_files(a, cid, [shared["id"]])
    finally:
        await a.close()
    deleted = await db.fetch(
        "SELECT * FROM chatd_delete_message_files(ARRAY[$1::bigint])", first["message_id"]
    )
    assert [row[0] for row in deleted] == [only["id"]]
    assert await db.fetchval("SELECT count(*) FROM file_chunks WHERE file_id = $1", only["id"]) == 0
    assert (await nginx.call("GET", f"/v1/files/{only['id']}", bob.token)).status_code == 404
    assert (await nginx.call("GET", f"/v1/files/{shared['id']}", bob.token)).status_code == 200
    await db.fetch("SELECT * FROM chatd_delete_message_files(ARRAY[$1::bigint])", second["message_id"])
    assert (await nginx.call("GET", f"/v1/files/{shared['id']}", bob.token)).status_code == 404


@pytest.mark.parametrize("name", ["a\x00b.txt", "\u202ereverse.txt", "x" * 400])
async def test_odd_names_are_cleaned(nginx: Api, name: str) -> None:
    alice = await nginx.user("fa")
    file = await upload(nginx, alice, b"text", name=name)
    assert "\x00" not in file["name"]
    assert "\u202e" not in file["name"]
    assert 0 < len(file["name"]) <= 255
    got = await nginx.call("GET", f"/v1/files/{file['id']}", alice.token)
    assert got.status_code == 200


async def test_a_deleted_message_takes_its_files_with_it(
    nginx: Api, stack: Stack, db: asyncpg.Connection
) -> None:
    """Deleting a message (the `delete` frame) deletes its files' bytes in the same transaction;
    history shows the tombstone without them."""
    alice, bob = await nginx.user("fa"), await nginx.user("fb")
    cid = await nginx.direct(alice, bob)
    file = await upload(nginx, alice, png(64, 48))
    a = await Ws.connect(stack.url, alice.token)
    try:
        sent = await send_files(a, cid, [file["id"]], "to be deleted")
        assert (await nginx.call("GET", f"/v1/files/{file['id']}", bob.token)).status_code == 200
        await a.send_json(
            {"type": "delete", "conversation_id": cid, "client_msg_id": uuid.uuid4().hex, "seq": sent["seq"]}
        )
        deleted = await a.expect(lambda f: f["type"] in ("ack", "error") and f["seq"] != sent["seq"])
        assert deleted["type"] == "ack", deleted
    finally:
        await a.close()
    assert await db.fetchval("SELECT count(*) FROM files WHERE id = $1", file["id"]) == 0
    assert await db.fetchval("SELECT count(*) FROM file_chunks WHERE file_id = $1", file["id"]) == 0
    assert (await nginx.call("GET", f"/v1/files/{file['id']}", bob.token)).status_code == 404
    assert (await nginx.call("GET", f"/v1/files/{file['id']}/thumbnail", bob.token)).status_code == 404
    original = (await nginx.history(bob, cid))[0]
    assert original["deleted_at"]
    assert "attachments" not in original


async def test_a_file_survives_backup_and_restore(
    nginx: Api, stack: Stack, db: asyncpg.Connection, tmp_path: Path
) -> None:
    """The backup role's own scripts (tests/test_backup.py runs them the same way): the files'
    bytes are in the dump, and a restored database serves them whole."""
    from tests.test_backup import backups, drop_database, restored, run, script_env

    alice, bob = await nginx.user("fa"), await nginx.user("fb")
    cid = await nginx.direct(alice, bob)
    data = os.urandom(700_000)  # three chunks
    file = await upload(nginx, alice, data, "archive.bin")
    a = await Ws.connect(stack.url, alice.token)
    try:
        assert (await send_files(a, cid, [file["id"]]))["type"] == "ack"
    finally:
        await a.close()
    scratch = f"restored_{uuid.uuid4().hex[:8]}"
    await db.execute(f'CREATE DATABASE "{scratch}"')
    try:
        taken = run("chatd-backup", script_env(stack, tmp_path, 13))
        assert taken.returncode == 0, taken.stderr
        [dump] = backups(tmp_path)
        back = run(
            "chatd-restore", script_env(stack, tmp_path, 14, BACKUP_DATABASE=scratch), str(tmp_path / dump)
        )
        assert back.returncode == 0, back.stderr
        conn = await restored(stack, scratch)
        try:
            chunks = await conn.fetch(
                "SELECT data FROM file_chunks WHERE file_id = $1 AND part = 0 ORDER BY n", file["id"]
            )
            assert b"".join(row["data"] for row in chunks) == data
            linked = "SELECT count(*) FROM message_files mf JOIN messages m ON m.id = mf.message_id"
            assert (
                await conn.fetchval(
                    f"{linked} WHERE mf.file_id = $1 AND m.conversation_id = $2", file["id"], cid
                )
                == 1
            )
        finally:
            await conn.close()
    finally:
        await drop_database(stack, scratch)
