"""Full-text search over what the caller may read (docs/protocol.md §3, GET /v1/search)."""

from __future__ import annotations

from typing import Any

from chatd.errors import ChatdError, Code
from chatd.storage import Stores

QUERY_MAX_CHARS = 200
PAGE_DEFAULT = 20
PAGE_MAX = 50


class Search:
    def __init__(self, stores: Stores) -> None:
        self._stores = stores

    async def search(
        self, uid: int, text: str, *, conversation_id: int | None, before: int | None, limit: int
    ) -> dict[str, Any]:
        """Newest first, a page at a time: `next_before` (the last result's id) asks for the next
        page, null when this one is the last."""
        text = text.strip()
        if not text or len(text) > QUERY_MAX_CHARS or "\x00" in text:
            raise ChatdError(
                Code.BAD_REQUEST, f"q: 1 to {QUERY_MAX_CHARS} characters of search words", field="q"
            )
        if not 1 <= limit <= PAGE_MAX:
            raise ChatdError(Code.BAD_REQUEST, f"limit: 1 to {PAGE_MAX}", field="limit")
        results = await self._stores.search.search(
            uid, text, conversation_id=conversation_id, before=before, limit=limit + 1
        )
        more = len(results) > limit
        results = results[:limit]
        return {"results": results, "next_before": results[-1]["id"] if more else None}
