"""The attachments' download cache (issue 21): nginx serves a file from the host's cache
directory after chatd authorized the download, and a worker only on a miss, writing the copy
on the way (src/chatd/filecache.py, nginx/chatd.conf.j2)."""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import stat
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import httpx
import pytest

from chatd.devstack import Stack
from chatd.filecache import FileCache
from tests.conftest import Worker
from tests.helpers import Api, Frame, User, Ws
from tests.test_attachments import png, send_files, upload

# The headers a download carries, from the cache or from a worker alike.
SERVED = (
    "content-type",
    "content-disposition",
    "content-length",
    "cache-control",
    "x-content-type-options",
    "content-security-policy",
    "referrer-policy",
    "cross-origin-resource-policy",
)


def fills(stack: Stack) -> float:
    """Copies the stack's workers (nginx's upstream) wrote to the cache."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for index in range(stack.workers):
        for family in text_string_to_metric_families(httpx.get(stack.metrics_url(index), timeout=5).text):
            for sample in family.samples:
                if sample.name == "chatd_file_cache_total" and sample.labels.get("event") == "fill":
                    total += sample.value
    return total


async def key_of(db: asyncpg.Connection, file: Frame) -> str:
    key: str = await db.fetchval("SELECT storage_key FROM files WHERE id = $1", file["id"])
    return key


def cached(stack: Stack, key: str, part: int = 0) -> Path:
    return stack.files_cache_dir / f"{key}.{part}"


async def wait_for(check: Callable[[], bool], timeout: float = 20) -> None:
    async with asyncio.timeout(timeout):
        for _ in itertools.count():
            if check():
                return
            await asyncio.sleep(0.02)


async def shared(nginx: Api, stack: Stack, data: bytes, name: str) -> tuple[User, User, int, Frame, Frame]:
    """alice sends bob a file; (alice, bob, conversation, file, the ack of the send)."""
    alice, bob = await nginx.user("ca"), await nginx.user("cb")
    cid = await nginx.group(alice, [bob], "cache")
    file, ack = await send(nginx, stack, alice, cid, data, name)
    return alice, bob, cid, file, ack


async def send(
    nginx: Api, stack: Stack, alice: User, cid: int, data: bytes, name: str
) -> tuple[Frame, Frame]:
    file = await upload(nginx, alice, data, name)
    a = await Ws.connect(stack.url, alice.token)
    try:
        ack = await send_files(a, cid, [file["id"]])
        assert ack["type"] == "ack", ack
    finally:
        await a.close()
    return file, ack


def everything(response: httpx.Response) -> list[tuple[str, str]]:
    return sorted((k, v) for k, v in response.headers.multi_items() if k not in ("date", "accept-ranges"))


def served(response: httpx.Response) -> dict[str, list[str]]:
    return {name: response.headers.get_list(name) for name in SERVED}


async def test_the_second_download_comes_from_the_cache(
    nginx: Api, stack: Stack, db: asyncpg.Connection
) -> None:
    data = os.urandom(700_000)  # three chunks
    _, bob, _, file, _ = await shared(nginx, stack, data, "archive.bin")
    key = await key_of(db, file)
    assert not cached(stack, key).exists()
    before = fills(stack)

    miss = await nginx.call("GET", f"/v1/files/{file['id']}", bob.token)
    assert miss.status_code == 200, miss.text
    assert miss.content == data
    copy = cached(stack, key)
    assert copy.read_bytes() == data  # the fill wrote the whole file, under its final name
    assert stat.S_IMODE(copy.stat().st_mode) == 0o640
    assert fills(stack) == before + 1

    # The bytes are no longer where a worker would read them: only the cache can serve them.
    await db.execute("DELETE FROM file_chunks WHERE file_id = $1 AND part = 0", file["id"])
    hit = await nginx.call("GET", f"/v1/files/{file['id']}", bob.token)
    assert hit.status_code == 200, hit.text
    assert hit.content == data
    assert fills(stack) == before + 1  # no worker filled anything
    assert served(hit) == served(miss)
    assert hit.headers["content-type"] == "application/octet-stream"
    assert hit.headers.get_list("content-disposition") == [
        "attachment; filename=\"archive.bin\"; filename*=UTF-8''archive.bin"
    ]
    assert hit.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in hit.headers["content-security-policy"]
    assert hit.headers["content-length"] == str(len(data))
    assert "x-accel-redirect" not in hit.headers
    # every header alike, but the date and the byte ranges nginx offers for a file on disk
    assert everything(hit) == everything(miss)


@pytest.mark.parametrize(
    ("data", "name", "content_type", "inline"),
    [
        (png(64, 48), "picture.png", "image/png", True),
        (b"<!doctype html><script>alert(1)</script>", "page.html", "text/plain; charset=utf-8", False),
    ],
)
async def test_headers_are_the_same_from_the_cache(
    nginx: Api, stack: Stack, db: asyncpg.Connection, data: bytes, name: str, content_type: str, inline: bool
) -> None:
    """The type chatd sniffed and its disposition survive X-Accel-Redirect to a static file
    (nginx would otherwise take the type from the name: .0 is none of its types)."""
    _, bob, _, file, _ = await shared(nginx, stack, data, name)
    key = await key_of(db, file)
    paths = [f"/v1/files/{file['id']}"] + ([f"/v1/files/{file['id']}/thumbnail"] if inline else [])
    for part, path in enumerate(paths):
        miss = await nginx.call("GET", path, bob.token)
        assert miss.status_code == 200, miss.text
        assert cached(stack, key, part).exists()
        hit = await nginx.call("GET", path, bob.token)
        assert hit.content == miss.content
        assert served(hit) == served(miss)
        for response in (miss, hit):
            assert all(len(values) == 1 for values in served(response).values()), served(response)
            assert response.headers["cache-control"] == "private, no-store"
    hit = await nginx.call("GET", paths[0], bob.token)
    assert hit.headers["content-type"] == content_type
    assert hit.headers["content-disposition"].startswith("inline;" if inline else "attachment;")


async def test_deleting_the_message_removes_the_cached_copies(
    nginx: Api, stack: Stack, db: asyncpg.Connection
) -> None:
    alice, bob, cid, file, sent = await shared(nginx, stack, png(64, 48), "gone.png")
    key = await key_of(db, file)
    for path in (f"/v1/files/{file['id']}", f"/v1/files/{file['id']}/thumbnail"):
        assert (await nginx.call("GET", path, bob.token)).status_code == 200
    assert cached(stack, key, 0).exists()
    assert cached(stack, key, 1).exists()
    a = await Ws.connect(stack.url, alice.token)
    try:
        cmid = uuid.uuid4().hex
        await a.send_json(
            {"type": "delete", "conversation_id": cid, "client_msg_id": cmid, "seq": sent["seq"]}
        )
        ack = await a.expect(lambda f: f["type"] in ("ack", "error") and f.get("client_msg_id") == cmid)
        assert ack["type"] == "ack", ack
    finally:
        await a.close()
    # removed after the COMMIT, before the ack
    assert not cached(stack, key, 0).exists()
    assert not cached(stack, key, 1).exists()
    assert (await nginx.call("GET", f"/v1/files/{file['id']}", bob.token)).status_code == 404


async def test_a_cached_file_is_still_refused_to_whoever_may_not_have_it(
    nginx: Api, stack: Stack, db: asyncpg.Connection
) -> None:
    alice, bob, cid, file, sent = await shared(nginx, stack, b"members only", "secret.txt")
    carol = await nginx.user("cc")
    key = await key_of(db, file)
    path = f"/v1/files/{file['id']}"
    assert (await nginx.call("GET", path, bob.token)).content == b"members only"
    assert cached(stack, key).exists()

    refused = await nginx.call("GET", path, carol.token)
    assert refused.status_code == 404
    assert refused.json()["error"]["code"] == "not_found"
    assert (await nginx.call("GET", path)).status_code == 401
    inside = await nginx.call("GET", f"/.chatd-files/{key}/0", bob.token)
    assert inside.status_code == 404
    assert inside.content != b"members only"
    removed = await nginx.call("DELETE", f"/v1/conversations/{cid}/members/{bob.id}", alice.token)
    assert removed.status_code == 200, removed.text
    assert (await nginx.call("GET", path, bob.token)).status_code == 404

    # Deleted where no worker of this host removes the copy (another app host, or the hook
    # itself): the copy is still there until the sweep, and nobody gets it.
    await db.fetch("SELECT * FROM chatd_delete_message_files(ARRAY[$1::bigint])", sent["message_id"])
    assert cached(stack, key).exists()
    gone = await nginx.call("GET", path, alice.token)
    assert gone.status_code == 404
    assert gone.content != b"members only"


async def test_the_sweep_removes_what_no_longer_belongs(
    nginx: Api, stack: Stack, db: asyncpg.Connection, spawn_worker: Callable[..., Worker]
) -> None:
    alice, bob, cid, kept, _ = await shared(nginx, stack, b"still sent", "kept.txt")
    deleted, deleted_ack = await send(nginx, stack, alice, cid, b"deleted elsewhere", "deleted.txt")
    short, _ = await send(nginx, stack, alice, cid, b"cut short by a crash", "short.txt")
    keys = {f["id"]: await key_of(db, f) for f in (kept, deleted, short)}
    for f in (kept, deleted, short):
        assert (await nginx.call("GET", f"/v1/files/{f['id']}", bob.token)).status_code == 200
        assert cached(stack, keys[f["id"]]).exists()
    await db.fetch("SELECT * FROM chatd_delete_message_files(ARRAY[$1::bigint])", deleted_ack["message_id"])
    with cached(stack, keys[short["id"]]).open("r+b") as out:
        out.truncate(5)
    cache = stack.files_cache_dir
    hour_ago = time.time() - 7200
    old = cache / f"{'A' * 43}.0"  # past the maximum age (whether its file exists or not)
    old.write_bytes(b"old")
    os.utime(old, (hour_ago, hour_ago))
    os.utime(cached(stack, keys[kept["id"]]), (time.time() - 60, time.time() - 60))
    left = cache / ".fill-left-by-a-killed-worker"
    left.write_bytes(b"half")
    os.utime(left, (hour_ago, hour_ago))
    filling = cache / ".fill-in-progress"
    filling.write_bytes(b"half")

    spawn_worker(CHATD_FILES_CACHE_SWEEP_S="0.2", CHATD_FILES_CACHE_MAX_AGE_S="3600")
    gone = [cached(stack, keys[deleted["id"]]), cached(stack, keys[short["id"]]), old, left]
    await wait_for(lambda: not any(p.exists() for p in gone))
    # a later sweep (it removes this one too) has not touched what belongs
    sentinel = cache / ".fill-sentinel"
    sentinel.write_bytes(b"")
    os.utime(sentinel, (hour_ago, hour_ago))
    await wait_for(lambda: not sentinel.exists())
    assert cached(stack, keys[kept["id"]]).read_bytes() == b"still sent"
    assert filling.exists()
    filling.unlink()
    got = await nginx.call("GET", f"/v1/files/{short['id']}", bob.token)  # filled again, whole
    assert got.content == b"cut short by a crash"
    assert cached(stack, keys[short["id"]]).read_bytes() == b"cut short by a crash"


async def chunks(parts: list[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


async def test_an_interrupted_fill_leaves_no_file(tmp_path: Path) -> None:
    cache = FileCache(str(tmp_path), 3600)
    key = "k" * 43
    # the client went away after the first chunk
    fill = cache.fill(key, 0, 9, chunks([b"abc", b"def", b"ghi"]))
    assert await anext(fill) == b"abc"
    [writing] = names(tmp_path)
    assert writing.startswith(".fill-")  # being written, under another name
    await fill.aclose()
    assert names(tmp_path) == []
    # fewer bytes than the file has (its rows were deleted while it was read)
    assert [c async for c in cache.fill(key, 0, 9, chunks([b"abc", b"def"]))] == [b"abc", b"def"]
    assert names(tmp_path) == []

    # the source fails half way
    async def failing() -> AsyncIterator[bytes]:
        yield b"abc"
        raise ConnectionResetError("postgres went away")

    with pytest.raises(ConnectionResetError):
        async for _ in cache.fill(key, 0, 9, failing()):
            pass
    assert names(tmp_path) == []
    # and whole, it is there under its name only
    whole = [b"abc", b"def", b"ghi"]
    assert [c async for c in cache.fill(key, 0, 9, chunks(whole))] == whole
    assert names(tmp_path) == [f"{key}.0"]
    assert stat.S_IMODE(os.stat(tmp_path / f"{key}.0").st_mode) == 0o640


async def test_a_download_broken_off_leaves_no_copy(
    nginx: Api, stack: Stack, db: asyncpg.Connection, spawn_worker: Callable[..., Worker]
) -> None:
    """A worker streaming a fill when its client (nginx) goes away: no partial copy."""
    data = os.urandom(20 * 1024 * 1024)
    _, bob, _, file, _ = await shared(nginx, stack, data, "big.bin")
    key = await key_of(db, file)
    worker = spawn_worker()
    cache = stack.files_cache_dir
    with socket.create_connection(("127.0.0.1", worker.port)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(f"GET /.chatd-files/{key}/0 HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        assert sock.recv(1024).startswith(b"HTTP/1.1 200")
        await wait_for(lambda: any(p.name.startswith(".fill-") for p in cache.iterdir()))
    await wait_for(lambda: not any(p.name.startswith(".fill-") for p in cache.iterdir()))
    assert not cached(stack, key).exists()
    got = await nginx.call("GET", f"/v1/files/{file['id']}", bob.token)
    assert got.content == data
    assert cached(stack, key).read_bytes() == data
