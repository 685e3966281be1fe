"""Attachments: uploads (streamed to a spool file, then to storage), who may download what,
and the cleanup of files never sent (docs/protocol.md §13, docs/operations.md "Attachments")."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import secrets
import tempfile
import unicodedata
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import IO, Any
from urllib.parse import quote

from chatd import tasks
from chatd.config import Settings
from chatd.errors import ChatdError, Code
from chatd.filecache import FileCache
from chatd.storage import Stores, is_unavailable
from chatd.storage.files import ORIGINAL, THUMBNAIL, Image, StoredFile

log = logging.getLogger("chatd.attachments")

MAX_PER_MESSAGE = 10
MAX_NAME_CHARS = 255
THUMBNAIL_PX = 320  # the longer side of a thumbnail
MAX_IMAGE_PIXELS = 50_000_000  # larger images are stored, without dimensions or thumbnail
# Shown inline (as images); every other type is served as a download (`attachment`).
IMAGE_TYPES = {"image/png", "image/jpeg", "image/gif", "image/webp"}
_PIL_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "GIF": "image/gif", "WEBP": "image/webp"}
SNIFF_BYTES = 512
SERVED_TYPES = {
    **{t: t for t in IMAGE_TYPES},
    "application/pdf": "application/pdf",
    "text/plain": "text/plain; charset=utf-8",
}


def sniff(head: bytes) -> str:
    """The type of a file from its first bytes; the name a client gives is never used. What is
    not recognised is `application/octet-stream`, or `text/plain` if it is UTF-8 text (an
    HTML or SVG file is text/plain here, so it is never served as a page)."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    if head.startswith(b"PK\x03\x04"):
        return "application/zip"
    if head.startswith(b"\x1f\x8b"):
        return "application/gzip"
    if b"\x00" not in head:
        try:
            head.decode("utf-8")
        except UnicodeDecodeError as exc:
            if exc.start < len(head) - 3:  # not just a character cut at the end of the sample
                return "application/octet-stream"
        return "text/plain"
    return "application/octet-stream"


def clean_name(raw: str | None) -> str:
    """A file name as shown and offered for saving: no path, no control characters."""
    name = (raw or "").replace("\\", "/").rpartition("/")[2]
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C").strip().strip(".")
    return name[:MAX_NAME_CHARS] or "file"


def inspect_image(spool: IO[bytes], content_type: str) -> Image | None:
    """Dimensions and a thumbnail (Pillow, in a thread). A file Pillow cannot read as the
    sniffed type, or too large to decode safely, gets neither and is still stored."""
    from PIL import Image as PILImage  # only uploads of images need it

    spool.seek(0)
    try:
        with PILImage.open(spool) as img:
            if _PIL_FORMATS.get(img.format or "") != content_type:
                return None
            width, height = img.size
            if width * height > MAX_IMAGE_PIXELS:
                return Image(width, height)
            img.draft("RGB", (THUMBNAIL_PX, THUMBNAIL_PX))  # JPEG: decode at a fraction of the size
            frame = img.convert("RGBA" if img.mode in ("RGBA", "LA", "P", "PA") else "RGB")
            frame.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
            out = io.BytesIO()
            if frame.mode == "RGBA":
                frame.save(out, "PNG", optimize=True)
                thumb_type = "image/png"
            else:
                frame.save(out, "JPEG", quality=80)
                thumb_type = "image/jpeg"
            return Image(width, height, out.getvalue(), thumb_type, frame.width, frame.height)
    except (OSError, ValueError, SyntaxError, PILImage.DecompressionBombError):
        return None


def spool_file() -> IO[bytes]:
    """An unnamed file on disk for one upload: unlinked at once, so nothing is left whatever
    happens to the upload or the worker (its name, kept as the open file's, tells an operator
    what it is: /proc/PID/fd shows `chatd-upload-... (deleted)`)."""
    fd, path = tempfile.mkstemp(prefix="chatd-upload-")
    os.unlink(path)
    return open(fd, "w+b")


def content_disposition(disposition: str, name: str) -> str:
    ascii_name = "".join(c if 32 <= ord(c) < 127 and c not in '"\\;' else "_" for c in name)
    return f"{disposition}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"


@dataclass(frozen=True, slots=True)
class Served:
    """How a download is served: nginx's internal location for the bytes, and the headers
    that go with them (nginx keeps them across X-Accel-Redirect, from the cache or a worker)."""

    location: str
    content_type: str
    disposition: str


@dataclass(frozen=True, slots=True)
class Blob:
    """What the internal location serves on a cache miss: headers, and the bytes chunk by chunk."""

    content_type: str
    size: int
    disposition: str
    chunks: AsyncIterator[bytes]


def served_as(found: StoredFile, part: int) -> tuple[str, str]:
    """The Content-Type and Content-Disposition of a file or its thumbnail. Only images are
    shown in the browser; anything else is a download, and text (HTML and SVG are text here)
    stays text/plain, never a page."""
    if part == THUMBNAIL:
        assert found.thumb_type is not None
        return found.thumb_type, content_disposition("inline", f"thumbnail-{found.name}")
    inline = found.content_type in IMAGE_TYPES
    served = SERVED_TYPES.get(found.content_type, "application/octet-stream")
    return served, content_disposition("inline" if inline else "attachment", found.name)


class Attachments:
    def __init__(self, stores: Stores, settings: Settings) -> None:
        self._stores = stores
        self._settings = settings
        self.cache = FileCache(settings.files_cache_dir, settings.files_cache_max_age_s)
        self._tasks: list[asyncio.Task[None]] = []

    async def upload(
        self, user_id: int, name: str | None, declared: int | None, body: AsyncIterator[bytes]
    ) -> dict[str, Any]:
        """Store an upload; over the limit (declared or counted) `too_large` before or while
        reading, so a body is never held whole in memory: it goes to a spool file on disk
        (already unlinked, so a crash leaves nothing), then to Postgres in one transaction."""
        limit = self._settings.max_upload_bytes
        if declared is not None and declared > limit:
            raise ChatdError(Code.TOO_LARGE, f"a file is at most {limit} bytes", limit=limit)
        with spool_file() as spool:
            size = 0
            head = b""
            async for chunk in body:
                size += len(chunk)
                if size > limit:
                    raise ChatdError(Code.TOO_LARGE, f"a file is at most {limit} bytes", limit=limit)
                if len(head) < SNIFF_BYTES:
                    head += chunk[: SNIFF_BYTES - len(head)]
                spool.write(chunk)
            if size == 0:
                raise ChatdError(Code.BAD_REQUEST, "the file is empty")
            content_type = sniff(head)
            image = None
            if content_type in IMAGE_TYPES:
                image = await asyncio.to_thread(inspect_image, spool, content_type)
            stored = await self._stores.files.create(
                secrets.token_urlsafe(32), user_id, clean_name(name), content_type, size, spool, image
            )
        return stored.public()

    async def sendable(self, user_id: int, file_ids: list[int]) -> None:
        """Only the uploader sends a file: any other id is `not_found`, like one that does not
        exist (an id seen in a conversation does not attach that file elsewhere)."""
        if len(file_ids) > MAX_PER_MESSAGE:
            raise ChatdError(
                Code.BAD_REQUEST, f"attachments: at most {MAX_PER_MESSAGE} files", field="attachments"
            )
        if len(set(file_ids)) != len(file_ids):
            raise ChatdError(Code.BAD_REQUEST, "attachments: a file appears twice", field="attachments")
        missing = set(file_ids) - await self._stores.files.owned(user_id, file_ids)
        if missing:
            raise ChatdError(Code.NOT_FOUND, "no such file", file_ids=sorted(missing))

    async def download(self, user_id: int, file_id: int, thumbnail: bool) -> Served:
        """Where nginx serves the bytes from, once chatd said this user may have them;
        `not_found` for a file that does not exist and one they may not see alike. Checked on
        every download, cached copy or not."""
        found = await self._stores.files.readable(file_id, user_id)
        if found is None or (thumbnail and found.thumb_type is None):
            raise ChatdError(Code.NOT_FOUND, "no such file")
        part = THUMBNAIL if thumbnail else ORIGINAL
        content_type, disposition = served_as(found, part)
        return Served(f"/.chatd-files/{found.storage_key}/{part}", content_type, disposition)

    async def blob(self, storage_key: str, part: int) -> Blob:
        """The bytes nginx did not find in the download cache, from Postgres; written to the
        cache on the way (filecache.py) when there is one."""
        found = await self._stores.files.by_key(storage_key)
        if found is None or part not in (ORIGINAL, THUMBNAIL) or (part and found.thumb_type is None):
            raise ChatdError(Code.NOT_FOUND, "no such file")
        size = found.size if part == ORIGINAL else found.thumb_size
        assert size is not None
        content_type, disposition = served_as(found, part)
        chunks = self._stores.files.chunks(found.id, part)
        return Blob(content_type, size, disposition, self.cache.fill(storage_key, part, size, chunks))

    async def deleted(self, cid: int, seq: int, storage_keys: list[str]) -> None:
        """After a delete's COMMIT: the copies of its files in this host's download cache."""
        self.cache.remove(storage_keys)  # an unlink or two per file

    # -- never-sent uploads, and the download cache ---------------------------------------------
    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._sweep()))
        if self.cache.directory is not None:
            self._tasks.append(asyncio.create_task(self._sweep_cache()))

    async def stop(self) -> None:
        await tasks.cancel(*self._tasks)
        self._tasks.clear()

    async def _sweep_cache(self) -> None:
        """Soon after start (a crash may have left copies short of their size), then every
        CHATD_FILES_CACHE_SWEEP_S."""
        await asyncio.sleep(min(self._settings.files_cache_sweep_s, 5.0))
        while True:
            try:
                removed = await self.cache.sweep(self._stores.files.sizes)
            except Exception as exc:
                log.warning("download cache not swept", exc_info=None if is_unavailable(exc) else exc)
            else:
                if removed:
                    log.info("download cache swept", extra={"files": removed})
            await asyncio.sleep(self._settings.files_cache_sweep_s)

    async def _sweep(self) -> None:
        ttl = self._settings.upload_unsent_ttl_s
        period = min(max(ttl / 4, 0.5), 300.0)
        while True:
            await asyncio.sleep(period)
            try:
                deleted = await self._stores.files.delete_unsent(ttl)
            except Exception as exc:
                log.warning("unsent uploads not cleaned up", exc_info=None if is_unavailable(exc) else exc)
                continue
            if deleted:
                self.cache.remove(deleted)
                log.info("unsent uploads deleted", extra={"files": len(deleted)})
