"""Edits and deletions: each a sequenced event of the conversation referring to the original
message (docs/protocol.md §4.11). Acked after COMMIT, idempotent by client_msg_id, delivered
live and on catch-up like any event, counted against the send rate limit."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from chatd import frames, policy
from chatd.config import Settings
from chatd.errors import ChatdError, Code
from chatd.fanout import Hub
from chatd.ratelimit import RateLimiter
from chatd.storage import Stores, is_unavailable
from chatd.storage.amends import KeyTaken
from chatd.storage.records import Event, Kind

log = logging.getLogger("chatd.amends")
# Called after a delete's COMMIT with (conversation_id, seq of the deleted message, storage keys
# of the files it deleted): where what lives outside Postgres (the attachments' download cache)
# is removed. Rows go in storage's `Amend.erase`.
OnDelete = Callable[[int, int, list[str]], Awaitable[None]]


class Amends:
    def __init__(self, stores: Stores, hub: Hub, limiter: RateLimiter, settings: Settings) -> None:
        self._stores = stores
        self._hub = hub
        self._limiter = limiter
        self._settings = settings
        self.on_delete: list[OnDelete] = []

    async def apply(self, user_id: int, frame: frames.Edit | frames.Delete) -> dict[str, Any]:
        """The `ack` of the edit or delete (its own seq), or raise the refusal."""
        if isinstance(frame, frames.Edit) and len(frame.body) > self._settings.max_message_chars:
            limit = self._settings.max_message_chars
            raise ChatdError(Code.MESSAGE_TOO_LONG, f"body is longer than {limit} characters")
        limited: ChatdError | None = None
        try:
            await self._limiter.hit(user_id)
        except ChatdError as exc:  # a resend of what is stored is still answered
            limited = exc
        for attempt in (1, 2):
            try:
                event, duplicate, files = await self._change(user_id, frame, limited)
                break
            except KeyTaken:  # the same key, committed meanwhile elsewhere: now a resend
                if attempt == 2:
                    raise
        # A resend publishes again too (the first may have died between COMMIT and PUBLISH);
        # subscribers drop what they already have.
        await self._hub.publish(frames.message(event))
        if isinstance(frame, frames.Delete) and not duplicate:
            await self._deleted(frame.conversation_id, frame.seq, files)
        return frames.ack(event, duplicate)

    async def _change(
        self, user_id: int, frame: frames.Edit | frames.Delete, limited: ChatdError | None
    ) -> tuple[Event, bool, list[str]]:
        kind = Kind.EDIT if isinstance(frame, frames.Edit) else Kind.DELETE
        cid, seq = frame.conversation_id, frame.seq
        async with self._stores.amends.change(cid, user_id, frame.client_msg_id, seq) as change:
            stored = change.stored
            if stored is not None:
                if (stored.conversation_id, stored.kind, stored.ref_seq) != (cid, kind, seq):
                    message = "client_msg_id was already used for another message or change"
                    raise ChatdError(Code.CLIENT_MSG_ID_CONFLICT, message)
                return stored, True, []
            if limited is not None:
                raise limited
            if isinstance(frame, frames.Edit):
                policy.may_edit(change.facts, user_id, seq, self._settings.edit_window_s)
                return await change.edit(frame.body), False, []
            policy.may_delete(change.facts, user_id, seq)
            event = await change.delete()
            return event, False, change.deleted_files

    async def _deleted(self, cid: int, seq: int, files: list[str]) -> None:
        for callback in self.on_delete:
            try:
                await callback(cid, seq, files)
            except Exception as exc:  # committed: the delete stands; what is left is logged
                log.warning(
                    "after-delete cleanup failed",
                    extra={"conversation_id": cid, "seq": seq},
                    exc_info=None if is_unavailable(exc) else exc,
                )
