"""Attachments' SQL: files and their bytes (in chunks), links to messages, cleanup."""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import IO, Any

import asyncpg
import orjson

CHUNK_BYTES = 256 * 1024
ORIGINAL, THUMBNAIL = 0, 1

_FILE_COLUMNS = (
    "id, storage_key, uploader_id, name, content_type, size, width, height,"
    " thumb_type, thumb_size, thumb_width, thumb_height, sent_at, created_at"
)


@dataclass(frozen=True, slots=True)
class Image:
    """What an upload's image is: its size, and its thumbnail's bytes if one was made."""

    width: int
    height: int
    thumbnail: bytes | None = None
    thumb_type: str | None = None
    thumb_width: int | None = None
    thumb_height: int | None = None


@dataclass(frozen=True, slots=True)
class StoredFile:
    id: int
    storage_key: str
    uploader_id: int
    name: str
    content_type: str
    size: int
    width: int | None
    height: int | None
    thumb_type: str | None
    thumb_size: int | None
    sent: bool
    created_at: datetime.datetime

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> StoredFile:
        return cls(
            id=row["id"],
            storage_key=row["storage_key"],
            uploader_id=row["uploader_id"],
            name=row["name"],
            content_type=row["content_type"],
            size=row["size"],
            width=row["width"],
            height=row["height"],
            thumb_type=row["thumb_type"],
            thumb_size=row["thumb_size"],
            sent=row["sent_at"] is not None,
            created_at=row["created_at"],
        )

    def public(self) -> dict[str, Any]:
        """What clients see of a file (an upload's answer, a message's `attachments`)."""
        info: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "size": self.size,
            "content_type": self.content_type,
        }
        if self.width is not None:
            info["width"] = self.width
            info["height"] = self.height
        info["thumbnail"] = self.thumb_type is not None
        return info


# Links the files of the sends a batch just stored; only the uploader's own files, so an id
# guessed or seen elsewhere never attaches someone else's file.
_LINK = """
WITH wanted AS (
    SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::smallint[], $4::bigint[])
        AS w (message_id, sender_id, position, file_id)
), linked AS (
    INSERT INTO message_files (message_id, position, file_id)
    SELECT w.message_id, w.position, w.file_id FROM wanted w
    JOIN files f ON f.id = w.file_id AND f.uploader_id = w.sender_id
    RETURNING message_id, position, file_id
), marked AS (
    UPDATE files SET sent_at = now() WHERE id IN (SELECT file_id FROM linked) AND sent_at IS NULL
)
SELECT l.message_id, l.position, f.id, f.storage_key, f.uploader_id, f.name, f.content_type,
       f.size, f.width, f.height, f.thumb_type, f.thumb_size, f.thumb_width, f.thumb_height,
       now() AS sent_at, f.created_at
FROM linked l JOIN files f ON f.id = l.file_id ORDER BY l.message_id, l.position
"""


async def link(
    conn: asyncpg.Connection | Any, wanted: Iterable[tuple[int, int, list[int]]]
) -> dict[int, list[dict[str, Any]]]:
    """In the send's transaction: link each new message (id, sender, file ids) to its files,
    and write what its frame shows of them (messages.attachments). Returns that, by message."""
    columns: tuple[list[int], list[int], list[int], list[int]] = ([], [], [], [])
    for message_id, sender_id, file_ids in wanted:
        for position, file_id in enumerate(file_ids):
            for column, value in zip(columns, (message_id, sender_id, position, file_id), strict=True):
                column.append(value)
    if not columns[0]:
        return {}
    rows = await conn.fetch(_LINK, *columns)
    shown: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        shown.setdefault(row["message_id"], []).append(StoredFile.from_row(row).public())
    if shown:
        await conn.execute(
            "UPDATE messages m SET attachments = a.shown::jsonb"
            " FROM unnest($1::bigint[], $2::text[]) AS a (id, shown) WHERE m.id = a.id",
            list(shown),
            [orjson.dumps(files).decode() for files in shown.values()],
        )
    return shown


async def delete_for_messages(conn: asyncpg.Connection | Any, message_ids: list[int]) -> list[str]:
    """In the transaction that deletes (or blanks) these messages: their files, unless another
    message carries them too (storage/amends.py, a delete). The storage keys of the files
    deleted (their copies in the download cache go after COMMIT)."""
    keys = await conn.fetch(
        "SELECT f.id, f.storage_key FROM message_files mf JOIN files f ON f.id = mf.file_id"
        " WHERE mf.message_id = ANY ($1::bigint[])",
        message_ids,
    )
    rows = await conn.fetch("SELECT * FROM chatd_delete_message_files($1::bigint[])", message_ids)
    deleted = {row[0] for row in rows}
    return [row["storage_key"] for row in keys if row["id"] in deleted]


class FileStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create(
        self,
        storage_key: str,
        uploader_id: int,
        name: str,
        content_type: str,
        size: int,
        body: IO[bytes],
        image: Image | None,
    ) -> StoredFile:
        """Store a spooled upload, chunk by chunk, in one transaction: all of it or nothing."""
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "INSERT INTO files (storage_key, uploader_id, name, content_type, size, width,"
                " height, thumb_type, thumb_size, thumb_width, thumb_height)"
                f" VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING {_FILE_COLUMNS}",
                storage_key,
                uploader_id,
                name,
                content_type,
                size,
                image.width if image else None,
                image.height if image else None,
                image.thumb_type if image and image.thumbnail else None,
                len(image.thumbnail) if image and image.thumbnail else None,
                image.thumb_width if image and image.thumbnail else None,
                image.thumb_height if image and image.thumbnail else None,
            )
            assert row is not None
            body.seek(0)
            n = 0
            while chunk := body.read(CHUNK_BYTES):
                await conn.execute(
                    "INSERT INTO file_chunks (file_id, part, n, data) VALUES ($1, $2, $3, $4)",
                    row["id"],
                    ORIGINAL,
                    n,
                    chunk,
                )
                n += 1
            if image is not None and image.thumbnail is not None:
                await conn.execute(
                    "INSERT INTO file_chunks (file_id, part, n, data) VALUES ($1, $2, 0, $3)",
                    row["id"],
                    THUMBNAIL,
                    image.thumbnail,
                )
        return StoredFile.from_row(row)

    async def readable(self, file_id: int, user_id: int) -> StoredFile | None:
        """The file if `user_id` may download it: its uploader while it is unsent, afterwards
        the members of a conversation a message carrying it is in. Else None."""
        row = await self._pool.fetchrow(
            f"SELECT {_FILE_COLUMNS} FROM files f WHERE f.id = $1 AND ("
            " (f.sent_at IS NULL AND f.uploader_id = $2)"
            " OR EXISTS (SELECT 1 FROM message_files mf JOIN messages m ON m.id = mf.message_id"
            "  JOIN members mb ON mb.conversation_id = m.conversation_id AND mb.user_id = $2"
            "  WHERE mf.file_id = f.id))",
            file_id,
            user_id,
        )
        return StoredFile.from_row(row) if row is not None else None

    async def owned(self, user_id: int, file_ids: list[int]) -> set[int]:
        """Which of these files `user_id` uploaded (sent or not): the ones they may attach."""
        rows = await self._pool.fetch(
            "SELECT id FROM files WHERE id = ANY ($1::bigint[]) AND uploader_id = $2", file_ids, user_id
        )
        return {row["id"] for row in rows}

    async def by_key(self, storage_key: str) -> StoredFile | None:
        query = f"SELECT {_FILE_COLUMNS} FROM files WHERE storage_key = $1"
        row = await self._pool.fetchrow(query, storage_key)
        return StoredFile.from_row(row) if row is not None else None

    async def chunks(self, file_id: int, part: int) -> AsyncIterator[bytes]:
        """The bytes, one chunk (one query) at a time: never the whole file in memory."""
        n = 0
        while True:
            data = await self._pool.fetchval(
                "SELECT data FROM file_chunks WHERE file_id = $1 AND part = $2 AND n = $3", file_id, part, n
            )
            if data is None:
                return
            yield data
            n += 1

    async def delete_unsent(self, older_than_s: float) -> list[str]:
        """Delete files uploaded longer ago than this and never sent; their storage keys."""
        rows = await self._pool.fetch(
            "DELETE FROM files WHERE sent_at IS NULL"
            " AND created_at < now() - make_interval(secs => $1) RETURNING storage_key",
            older_than_s,
        )
        return [row[0] for row in rows]

    async def sizes(self, storage_keys: list[str]) -> dict[str, tuple[int, int | None]]:
        """The sizes (file, thumbnail) of those of these files that still exist."""
        rows = await self._pool.fetch(
            "SELECT storage_key, size, thumb_size FROM files WHERE storage_key = ANY ($1::text[])",
            storage_keys,
        )
        return {row[0]: (row[1], row[2]) for row in rows}
