"""The download cache: a directory on an app host that nginx serves attachments from, so a
download's bytes pass through a worker once per host, not once per download
(docs/operations.md "Attachments"). PostgreSQL stays the store of record; a file here is a
copy named `<storage_key>.<part>`, written whole or not at all (a temporary file, renamed),
removed at once when the deleting worker shares the host, by the sweep otherwise, and when
older than CHATD_FILES_CACHE_MAX_AGE_S."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import tempfile
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path

from chatd import metrics

log = logging.getLogger("chatd.filecache")

# A storage key (secrets.token_urlsafe) and the part: what nginx's location matches too.
NAME = re.compile(r"([A-Za-z0-9_-]{1,128})\.([01])")
TEMP_PREFIX = ".fill-"
TEMP_MAX_AGE_S = 3600.0  # a fill's temporary file a killed worker left behind
FILE_MODE = 0o640  # nginx reads through the group (docs/operations.md)
SWEEP_BATCH = 1000

# storage_key -> (size of part 0, size of part 1 or None), for the keys that still exist
Known = Callable[[list[str]], Awaitable[dict[str, tuple[int, int | None]]]]


def _publish(fd: int, tmp: str, final: str) -> None:
    """In a thread: make the filled file durable and visible under its name, or remove it."""
    try:
        os.fchmod(fd, FILE_MODE)
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, final)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class FileCache:
    def __init__(self, directory: str, max_age_s: float) -> None:
        self.directory = Path(directory) if directory else None
        self._max_age_s = max_age_s

    def path(self, key: str, part: int) -> Path | None:
        name = f"{key}.{part}"
        if self.directory is None or not NAME.fullmatch(name):
            return None
        return self.directory / name

    async def fill(
        self, key: str, part: int, size: int, chunks: AsyncIterator[bytes]
    ) -> AsyncGenerator[bytes, None]:
        """Pass the chunks on, writing them to a temporary file that takes the file's name only
        once all `size` bytes are in it, before the last chunk goes out (so a client that has
        the whole file finds the copy in place). Interrupted (the client or nginx went away, the rows
        were deleted meanwhile, the disk is full): no file, and the download is not affected."""
        final = self.path(key, part)
        fd = -1
        tmp = ""
        if final is not None:
            try:
                fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=final.parent)
            except OSError as exc:
                log.warning("download cache not writable", extra={"cause": repr(exc)})
        written = 0
        held: bytes | None = None  # the last chunk goes out once the copy is in place
        try:
            async for chunk in chunks:
                if held is not None:
                    yield held
                if fd >= 0:
                    try:
                        view = memoryview(chunk)
                        while view:
                            view = view[os.write(fd, view) :]
                    except OSError as exc:
                        log.warning("download cache write failed", extra={"cause": repr(exc)})
                        os.close(fd)
                        fd = -1
                        os.unlink(tmp)
                written += len(chunk)
                held = chunk
            if fd >= 0 and written == size:
                owned, fd = fd, -1  # the thread closes it, whatever happens to this task
                await asyncio.to_thread(_publish, owned, tmp, str(final))
                metrics.FILE_CACHE.labels("fill").inc()
            if held is not None:
                yield held
        finally:
            if fd >= 0:
                os.close(fd)
                with contextlib.suppress(OSError):
                    os.unlink(tmp)

    def remove(self, keys: Iterable[str]) -> int:
        """Remove the copies of these files on this host (after the delete's COMMIT)."""
        removed = 0
        for key in keys:
            for part in (0, 1):
                path = self.path(key, part)
                if path is None:
                    continue
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed += 1
        if removed:
            metrics.FILE_CACHE.labels("removed").inc(removed)
        return removed

    def _scan(self) -> list[tuple[str, float, int]]:
        assert self.directory is not None
        found = []
        with os.scandir(self.directory) as entries:
            for entry in entries:
                with contextlib.suppress(FileNotFoundError):
                    st = entry.stat(follow_symlinks=False)
                    found.append((entry.name, st.st_mtime, st.st_size))
        return found

    def _unlink(self, name: str) -> int:
        assert self.directory is not None
        try:
            (self.directory / name).unlink()
        except FileNotFoundError:
            return 0
        return 1

    async def sweep(self, known: Known) -> int:
        """Remove what no longer belongs: copies of files deleted elsewhere (another app host's
        worker deleted the message), copies whose size is not the file's (a crash before the
        data reached the disk), copies older than the maximum age, and fills' temporary files
        a killed worker left. How many files were removed."""
        if self.directory is None:
            return 0
        now = time.time()
        removed = 0
        kept: dict[str, list[tuple[str, int, int]]] = {}
        for name, mtime, size in self._scan():  # one directory read: quick, no thread
            match = NAME.fullmatch(name)
            if name.startswith(TEMP_PREFIX):
                if now - mtime > TEMP_MAX_AGE_S:
                    removed += self._unlink(name)
            elif match is None or now - mtime > self._max_age_s:
                removed += self._unlink(name)
            else:
                kept.setdefault(match[1], []).append((name, int(match[2]), size))
        keys = list(kept)
        for start in range(0, len(keys), SWEEP_BATCH):
            batch = keys[start : start + SWEEP_BATCH]
            sizes = await known(batch)
            for key in batch:
                for name, part, size in kept[key]:
                    expected = sizes.get(key)
                    if expected is None or expected[part] != size:
                        removed += self._unlink(name)
        if removed:
            metrics.FILE_CACHE.labels("removed").inc(removed)
        return removed
