"""Conversations and messages: the service layer between the transports and storage."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

from chatd import frames, metrics, notices, policy
from chatd.batching import Batcher
from chatd.config import Settings
from chatd.errors import ChatdError, Code
from chatd.fanout import Hub
from chatd.presence import Presence
from chatd.ratelimit import RateLimiter
from chatd.receipts import Receipts
from chatd.storage import Stores, is_unavailable
from chatd.storage.messages import Stored
from chatd.storage.records import Append, Event, Kind

HISTORY_MAX = 200
LEAVE_MAX = 500  # groups one `POST /v1/conversations/leave` leaves at most
# Group commit: sends arriving while these many statements are in flight share the next one.
COMMITS_IN_FLIGHT = 4
COMMIT_BATCH_MAX = 256
TOOK_PART_CACHE = 100_000
# A member removed on another worker and added back sets the flag again on a send at most this
# long after this worker last set it (docs/protocol.md §4.9).
TOOK_PART_RECHECK_S = 60.0
log = logging.getLogger("chatd.messaging")
Outgoing = tuple[int, str, str, tuple[int, ...]]  # conversation_id, client_msg_id, body, files
MAX_ATTACHMENTS = 10  # files one message carries


class Hold:
    """One connection's rule for retried sends (docs/protocol.md §7): once a send is refused
    with `rate_limited` or `unavailable`, every later send of the connection is refused with
    the same code until that send (same conversation and client_msg_id) is sent again. A
    client that resends in order is then never overtaken by sends it wrote before it saw the
    refusal, however late those are read (a time limit alone would let them through)."""

    __slots__ = ("code", "key", "until")

    def __init__(self) -> None:
        self.key: tuple[int, str] | None = None
        self.code = Code.RATE_LIMITED
        self.until = 0.0  # time.monotonic() when the limit lets the refused send in

    def holds(self, conversation_id: int, client_msg_id: str) -> bool:
        """True if this send must be refused; the refused send itself lifts the hold."""
        if self.key is None:
            return False
        if self.key == (conversation_id, client_msg_id):
            self.key = None
            return False
        return True

    def refused(self, conversation_id: int, client_msg_id: str, exc: BaseException) -> bool:
        """A send was refused: hold the later ones if it is to be retried (True if so)."""
        if isinstance(exc, ChatdError) and exc.code is Code.RATE_LIMITED:
            self.code = Code.RATE_LIMITED
            self.until = time.monotonic() + exc.extra.get("retry_after_ms", 0) / 1000
        elif is_unavailable(exc):
            self.code = Code.UNAVAILABLE
        else:
            return False
        self.key = (conversation_id, client_msg_id)
        return True

    def refusal(self) -> ChatdError:
        if self.code is Code.UNAVAILABLE:
            return ChatdError(Code.UNAVAILABLE, "an earlier send was refused; resend it first")
        left_ms = max(0, math.ceil((self.until - time.monotonic()) * 1000))
        return ChatdError(
            Code.RATE_LIMITED, "an earlier send was refused; resend it first", retry_after_ms=left_ms
        )


def _append(user_id: int, send: Outgoing) -> Append:
    conversation_id, client_msg_id, body, carried = send
    return Append(conversation_id, user_id, client_msg_id, body, Kind.TEXT, carried)


class Messaging:
    def __init__(
        self,
        stores: Stores,
        hub: Hub,
        limiter: RateLimiter,
        receipts: Receipts,
        settings: Settings,
        lookups: RateLimiter,
        groups: RateLimiter,
        presence: Presence,
    ) -> None:
        self._presence = presence
        self._receipts = receipts
        self._lookups = lookups
        self._groups = groups  # groups created per user per hour
        # (conversation, user) pairs this worker knows have taken part (presence consent).
        self._took_part: dict[tuple[int, int], float] = {}  # -> when to set it again
        self._stores = stores
        self._hub = hub
        self._limiter = limiter
        self._settings = settings
        # Told the messages each send group stored (not resends), after the publish: Web Push
        # (pushes.py). It must return at once; the acks do not wait for it.
        self.on_committed: Callable[[Sequence[Event]], None] | None = None
        self._appends: Batcher[Append, Stored] = Batcher(
            self._append_many, max_size=COMMIT_BATCH_MAX, concurrency=COMMITS_IN_FLIGHT
        )

    async def _append_many(self, items: list[Append]) -> list[Stored | BaseException]:
        metrics.COMMIT_BATCH.observe(len(items))
        return await self._stores.messages.append_many(items)

    async def _check_files(self, user_id: int, sends: Sequence[Outgoing]) -> dict[int, ChatdError]:
        """Refusals of sends whose files the sender may not send (by index): more than
        MAX_ATTACHMENTS, one twice, or one that is not the sender's upload (`not_found`, like
        a file that does not exist; storage links only the sender's own files in any case)."""
        wanted = sorted({f for send in sends for f in send[3]})
        if not wanted:
            return {}
        owned = await self._stores.files.owned(user_id, wanted)
        refusals: dict[int, ChatdError] = {}
        for index, send in enumerate(sends):
            carried = send[3]
            if len(carried) > MAX_ATTACHMENTS:
                message = f"attachments: at most {MAX_ATTACHMENTS} files"
                refusals[index] = ChatdError(Code.BAD_REQUEST, message, field="attachments")
            elif len(set(carried)) != len(carried):
                message = "attachments: a file appears twice"
                refusals[index] = ChatdError(Code.BAD_REQUEST, message, field="attachments")
            elif missing := sorted(set(carried) - owned):
                refusals[index] = ChatdError(Code.NOT_FOUND, "no such file", file_ids=missing)
        return refusals

    # -- messages ------------------------------------------------------------------------
    async def send_many(
        self, user_id: int, sends: Sequence[Outgoing], hold: Hold | None = None
    ) -> list[dict[str, Any] | BaseException]:
        """One connection's sends, in its order: an ack (built after the COMMIT) or the
        exception, per send. They share one group commit, so a later send of the same
        conversation always gets the higher seq; at most COMMIT_BATCH_MAX of them. `hold` is
        the connection's (see Hold)."""
        hold = hold if hold is not None else Hold()
        outcomes: list[dict[str, Any] | BaseException] = []
        file_refusals = await self._check_files(user_id, sends)
        for index, (_, _, body, _) in enumerate(sends):
            if index in file_refusals:
                outcomes.append(file_refusals[index])
            elif len(body) > self._settings.max_message_chars:
                error = ChatdError(
                    Code.MESSAGE_TOO_LONG,
                    f"body is longer than {self._settings.max_message_chars} characters",
                )
                outcomes.append(error)
            else:
                outcomes.append({})
        counted = []
        for i, outcome in enumerate(outcomes):
            if not isinstance(outcome, BaseException):
                if hold.holds(sends[i][0], sends[i][1]):
                    outcomes[i] = hold.refusal()
                else:
                    counted.append(i)
        # One pipelined INCR per send, in order. Past the first one refused, every later one
        # is held behind it, whatever its count says (the window may end between two INCRs).
        hits = await asyncio.gather(*(self._limiter.hit(user_id) for _ in counted), return_exceptions=True)
        todo: list[int] = []
        refused: list[int] = []
        refusal: BaseException | None = None
        for index, hit in zip(counted, hits, strict=True):
            if refused or isinstance(hit, BaseException):
                refused.append(index)
                refusal = refusal or hit
            else:
                todo.append(index)
        events: list[Event] = []
        if refused:  # a send already stored is answered, never refused: it stores nothing
            refused = await self._answer_stored(user_id, sends, refused, outcomes, events)
        appends = [
            Append(sends[i][0], user_id, sends[i][1], sends[i][2], Kind.TEXT, sends[i][3]) for i in todo
        ]
        stored = await self._appends.submit_many(appends)
        events += [result[0] for result in stored if not isinstance(result, BaseException)]
        # A resend re-publishes too: if the first attempt died between COMMIT and PUBLISH,
        # this delivers it now; subscribers drop the copy if they already have it. Queued in
        # commit order.
        await self._hub.publish_many([frames.message(event) for event in events])
        if self.on_committed is not None:
            self.on_committed([r[0] for r in stored if not isinstance(r, BaseException) and not r[1]])
        for cid in dict.fromkeys(event.conversation_id for event in events):
            await self._mark_took_part(cid, user_id)
        for index, result in zip(todo, stored, strict=True):
            outcomes[index] = result if isinstance(result, BaseException) else frames.ack(*result)
        if refused and refusal is not None:
            outcomes[refused[0]] = refusal
        # The first send (of those the hold let through) refused for a reason worth retrying
        # holds every later one: the rate limit's refusal, or a failed commit before it.
        for index in counted:
            outcome = outcomes[index]
            if isinstance(outcome, BaseException) and hold.refused(sends[index][0], sends[index][1], outcome):
                break
        for index in refused[1:]:
            outcomes[index] = hold.refusal() if hold.key is not None else outcomes[refused[0]]
        for outcome in outcomes:
            if isinstance(outcome, ChatdError):
                metrics.SENDS.labels(outcome.code.value).inc()
            elif isinstance(outcome, BaseException):
                metrics.SENDS.labels("unavailable" if is_unavailable(outcome) else "internal").inc()
            else:
                (metrics.SENDS_DUPLICATE if outcome["duplicate"] else metrics.SENDS_ACKED).inc()
        return outcomes

    async def _answer_stored(
        self,
        user_id: int,
        sends: Sequence[Outgoing],
        refused: list[int],
        outcomes: list[dict[str, Any] | BaseException],
        events: list[Event],
    ) -> list[int]:
        """Sends the rate limit refused that are already stored (a resend after a reconnect)
        get their duplicate ack instead, so a client is never asked to resend what it may
        have seen stored. Returns those still refused."""
        items = [Append(sends[i][0], user_id, sends[i][1], sends[i][2], Kind.TEXT) for i in refused]
        try:
            answers = await self._stores.messages.stored(items)
        except Exception as exc:  # only a refusal more: the client resends it
            log.warning("stored sends not looked up", exc_info=None if is_unavailable(exc) else exc)
            return refused
        still = []
        for index, answer in zip(refused, answers, strict=True):
            if answer is None:
                still.append(index)
            elif isinstance(answer, ChatdError):
                outcomes[index] = answer
            else:
                outcomes[index] = frames.ack(*answer)
                events.append(answer[0])
        return still

    async def _mark_took_part(self, conversation_id: int, user_id: int) -> None:
        """Sending makes the sender's presence visible in the conversation (docs/protocol.md
        §4.9). One UPDATE per (conversation, user) and worker a minute at most; a failure only
        leaves the flag for the next send to set."""
        key = (conversation_id, user_id)
        now = time.monotonic()
        if self._took_part.get(key, 0.0) > now:
            return
        try:
            if await self._stores.conversations.mark_took_part(conversation_id, user_id):
                await self._took_part_now(conversation_id, user_id)
        except Exception as exc:
            log.warning(
                "took_part not recorded",
                extra={"conversation_id": conversation_id},
                exc_info=None if is_unavailable(exc) else exc,
            )
            return
        if len(self._took_part) >= TOOK_PART_CACHE:
            self._took_part.clear()
        self._took_part[key] = now + TOOK_PART_RECHECK_S

    async def history(
        self, user_id: int, conversation_id: int, *, after: int | None, before: int | None, limit: int
    ) -> list[dict[str, Any]]:
        await self._stores.conversations.require_member(conversation_id, user_id)
        page = await self._stores.messages.page(
            conversation_id, after=after, before=before, limit=min(limit, HISTORY_MAX)
        )
        return [frames.message(event) for event in page]

    async def catch_up_page(self, conversation_id: int, after: int, limit: int) -> list[dict[str, Any]]:
        """Events after `after`, ascending, for a session that already checked membership."""
        page = await self._stores.messages.page(conversation_id, after=after, limit=limit)
        return [frames.message(event) for event in page]

    async def last_seqs(self, conversation_ids: list[int]) -> dict[int, int]:
        return await self._stores.conversations.last_seqs(conversation_ids)

    # -- conversations -------------------------------------------------------------------
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
            await self._took_part_now(conv["id"], user_id)
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
        """Whether the member took part in the conversation (consent, docs/protocol.md §4.9)."""
        return await self._stores.conversations.took_part(conversation_id, user_id)

    async def conversation(self, user_id: int, conversation_id: int) -> dict[str, Any]:
        return await self._stores.conversations.get_for_member(conversation_id, user_id)

    async def conversations(self, user_id: int) -> list[dict[str, Any]]:
        return await self._stores.conversations.of_user(user_id)

    async def members(
        self, user_id: int, conversation_id: int, after: int, limit: int
    ) -> list[dict[str, Any]]:
        await self._stores.conversations.require_member(conversation_id, user_id)
        return await self._stores.conversations.members(conversation_id, after, min(limit, 1000))

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
            await self._took_part_now(conversation_id, user_id)
            return None
        frame = frames.message(event)
        await self._hub.publish(frame)  # committed now
        await self._took_part_now(conversation_id, user_id)  # adding members is taking part
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
        for uid in removed:
            self._took_part.pop((conversation_id, uid), None)
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

    async def _took_part_now(self, conversation_id: int, user_id: int) -> None:
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

    async def _announce(self, conv: dict[str, Any], user_ids: list[int], since: int) -> None:
        await self._hub.publish_to_users(user_ids, notices.conversation_added(conv, since))
