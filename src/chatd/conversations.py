"""Conversations: opening direct ones, groups and their members, and taking part (§4.9)."""

from __future__ import annotations

import logging
import time
from typing import Any

from chatd import frames, notices, policy
from chatd.config import Settings
from chatd.errors import ChatdError, Code
from chatd.fanout import Hub
from chatd.presence import Presence
from chatd.ratelimit import RateLimiter
from chatd.receipts import Receipts
from chatd.storage import Stores, is_unavailable
from chatd.storage.records import Kind

LEAVE_MAX = 500  # groups one `POST /v1/conversations/leave` leaves at most
MEMBERS_PAGE_MAX = 1000
TOOK_PART_CACHE = 100_000
# A member removed on another worker and added back sets the flag again on a send at most this
# long after this worker last set it (docs/protocol.md §4.9).
TOOK_PART_RECHECK_S = 60.0
log = logging.getLogger("chatd.conversations")


class TakingPart:
    """Whether a member took part in a conversation (consent, docs/protocol.md §4.9): only
    then do others see their reads and presence there. Set by sending, opening a direct
    conversation again, or adding members; in Postgres, then announced to Redis's state."""

    def __init__(self, stores: Stores, receipts: Receipts, presence: Presence) -> None:
        self._stores = stores
        self._receipts = receipts
        self._presence = presence
        # (conversation, user) pairs this worker knows have taken part -> when to set it again.
        self._known: dict[tuple[int, int], float] = {}

    async def took_part(self, conversation_id: int, user_id: int) -> bool:
        return await self._stores.conversations.took_part(conversation_id, user_id)

    async def sent(self, conversation_id: int, user_id: int) -> None:
        """Sending makes the sender's presence visible in the conversation. One UPDATE per
        (conversation, user) and worker a minute at most; a failure only leaves the flag for
        the next send to set."""
        key = (conversation_id, user_id)
        now = time.monotonic()
        if self._known.get(key, 0.0) > now:
            return
        try:
            if await self._stores.conversations.mark_took_part(conversation_id, user_id):
                await self.announce(conversation_id, user_id)
        except Exception as exc:
            log.warning(
                "took_part not recorded",
                extra={"conversation_id": conversation_id},
                exc_info=None if is_unavailable(exc) else exc,
            )
            return
        if len(self._known) >= TOOK_PART_CACHE:
            self._known.clear()
        self._known[key] = now + TOOK_PART_RECHECK_S

    async def announce(self, conversation_id: int, user_id: int) -> None:
        """After the COMMIT that recorded it: the user's reads there may show, and the members
        of a small conversation follow the user's presence from now on (§4.8, §4.9). State
        only: if Redis fails here, the change stands (the next read mark finds the flag in
        Postgres, the next `ready` the presence)."""
        try:
            await self._receipts.took_part(conversation_id, user_id)
            await self._presence.took_part(conversation_id, user_id)
        except Exception as exc:
            log.warning(
                "took_part not announced",
                extra={"conversation_id": conversation_id},
                exc_info=None if is_unavailable(exc) else exc,
            )

    def removed(self, conversation_id: int, user_ids: list[int]) -> None:
        for uid in user_ids:
            self._known.pop((conversation_id, uid), None)


class Conversations:
    def __init__(
        self,
        stores: Stores,
        hub: Hub,
        receipts: Receipts,
        taking_part: TakingPart,
        settings: Settings,
        lookups: RateLimiter,
        groups: RateLimiter,
    ) -> None:
        self._stores = stores
        self._hub = hub
        self._receipts = receipts
        self.taking_part = taking_part
        self._settings = settings
        self._lookups = lookups
        self._groups = groups  # groups created per user per hour

    async def resolve_users(self, caller: int, user_ids: list[int], usernames: list[str]) -> list[int]:
        """Ids for the users `caller` names, or `user_not_found` without telling more than needed.

        An id resolves only if `caller` could know it (itself, or someone it shares a
        conversation with); any other id gets the same answer as one that does not exist.
        Usernames resolve for anyone (that is how one reaches a new contact), but names that
        do not exist are counted per caller, and past the limit every username lookup is
        refused, so a dictionary of names cannot be probed; a request whose missing names take
        the count past the limit is refused too, without saying which names were missing.
        """
        ids = set(user_ids)
        if usernames:
            await self._lookups.check(caller)
            names = {name.strip().lower() for name in usernames}
            found = await self._stores.accounts.ids_by_username(sorted(names))
            if missing := names - set(found):
                await self._lookups.add(caller, len(missing))  # past the limit: rate_limited
                raise ChatdError(Code.USER_NOT_FOUND, "no such user", usernames=sorted(missing))
            ids.update(found.values())
        if user_ids:
            known = await self._stores.accounts.known_ids(caller, sorted(set(user_ids)))
            if missing_ids := set(user_ids) - known:
                raise ChatdError(Code.USER_NOT_FOUND, "no such user", user_ids=sorted(missing_ids))
        return sorted(ids)

    async def find_user(self, caller: int, username: str) -> dict[str, Any]:
        (found,) = await self.resolve_users(caller, [], [username])
        return {"user_id": found, "username": username.strip().lower()}

    async def open_direct(self, user_id: int, other: int) -> tuple[dict[str, Any], bool]:
        if other == user_id:
            raise ChatdError(Code.BAD_REQUEST, "a direct conversation needs another user")
        conv, created = await self._stores.conversations.find_or_create_direct(user_id, other)
        if created:
            await self._announce(conv, [user_id, other], since=0)
        else:  # opening it again is taking part (§4.9)
            await self.taking_part.announce(conv["id"], user_id)
        return conv, created

    async def create_group(self, user_id: int, title: str, members: list[int]) -> dict[str, Any]:
        everyone = sorted(set(members) | {user_id})
        if len(everyone) > self._settings.max_group_members:
            raise ChatdError(
                Code.GROUP_FULL, f"a group holds at most {self._settings.max_group_members} members"
            )
        # Each group lands in every member's `ready`: one user cannot make thousands of them.
        await self._groups.hit(user_id)
        conv = await self._stores.conversations.create_group(user_id, title, everyone)
        await self._announce(conv, everyone, since=0)
        return conv

    async def took_part(self, conversation_id: int, user_id: int) -> bool:
        return await self.taking_part.took_part(conversation_id, user_id)

    async def get(self, user_id: int, conversation_id: int) -> dict[str, Any]:
        return await self._stores.conversations.get_for_member(conversation_id, user_id)

    async def of_user(self, user_id: int) -> list[dict[str, Any]]:
        return await self._stores.conversations.of_user(user_id)

    async def last_seqs(self, conversation_ids: list[int]) -> dict[int, int]:
        return await self._stores.conversations.last_seqs(conversation_ids)

    async def members(
        self, user_id: int, conversation_id: int, after: int, limit: int
    ) -> list[dict[str, Any]]:
        await self._stores.conversations.require_member(conversation_id, user_id)
        return await self._stores.conversations.members(conversation_id, after, min(limit, MEMBERS_PAGE_MAX))

    async def add_members(
        self, user_id: int, conversation_id: int, users: list[int]
    ) -> dict[str, Any] | None:
        async with self._stores.conversations.change_group(conversation_id, user_id) as group:
            policy.may_change_members(group.facts)
            added, total = await group.add(users)  # the actor takes part, whoever is added
            if added:
                policy.within_group_size(total, self._settings.max_group_members)
                event = await group.record(Kind.MEMBERS_ADDED, added)
                conv = await group.conversation()
        if not added:
            await self.taking_part.announce(conversation_id, user_id)
            return None
        frame = frames.message(event)
        await self._hub.publish(frame)  # committed now
        await self.taking_part.announce(conversation_id, user_id)  # adding members is taking part
        # The new members' devices follow the conversation from the event that added them.
        await self._announce(conv, list(event.user_ids or ()), since=event.seq - 1)
        return frame

    async def remove_members(
        self, user_id: int, conversation_id: int, users: list[int]
    ) -> dict[str, Any] | None:
        async with self._stores.conversations.change_group(conversation_id, user_id) as group:
            policy.may_remove(group.facts, user_id, users)
            removed = await group.remove(users)
            if not removed:
                return None
            event = await group.record(Kind.MEMBERS_REMOVED, removed)
        frame = frames.message(event)
        await self._hub.publish(frame)  # committed now
        await self._receipts.forget(conversation_id, removed, event.seq)
        self.taking_part.removed(conversation_id, removed)
        return frame

    async def leave_many(self, user_id: int, conversation_ids: list[int] | None) -> dict[str, Any]:
        """Leave these groups, or (None) decline up to LEAVE_MAX groups the user never took part
        in. Each is an ordinary leave (a `members_removed` event); conversations that are not
        groups of the user's are `ignored`. Safe to repeat after a failure part-way."""
        more = False
        if conversation_ids is None:
            conversation_ids = await self._stores.conversations.not_taken_part(user_id, LEAVE_MAX + 1)
            more, conversation_ids = len(conversation_ids) > LEAVE_MAX, conversation_ids[:LEAVE_MAX]
        left: list[int] = []
        ignored: list[int] = []
        for cid in conversation_ids:
            try:
                event = await self.remove_members(user_id, cid, [user_id])
            except ChatdError as exc:
                if exc.code not in (Code.NOT_MEMBER, Code.NOT_A_GROUP):
                    raise
                event = None
            (left if event is not None else ignored).append(cid)
        return {"left": left, "ignored": ignored, "more": more}

    async def _announce(self, conv: dict[str, Any], user_ids: list[int], since: int) -> None:
        await self._hub.publish_to_users(user_ids, notices.conversation_added(conv, since))
