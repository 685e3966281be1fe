"""Sending messages (one connection's sends share a group commit) and reading history."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

from chatd import frames, metrics
from chatd.batching import Batcher
from chatd.config import Settings
from chatd.conversations import TakingPart
from chatd.errors import ChatdError, Code
from chatd.fanout import Hub
from chatd.ratelimit import RateLimiter
from chatd.storage import Stores, is_unavailable
from chatd.storage.messages import Stored
from chatd.storage.records import Append, Event, Kind

HISTORY_MAX = 200
# Group commit: sends arriving while these many statements are in flight share the next one.
COMMITS_IN_FLIGHT = 4
COMMIT_BATCH_MAX = 256
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


class Messaging:
    def __init__(
        self,
        stores: Stores,
        hub: Hub,
        limiter: RateLimiter,
        taking_part: TakingPart,
        settings: Settings,
    ) -> None:
        self._taking_part = taking_part
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
            await self._taking_part.sent(cid, user_id)
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

    async def history(
        self, user_id: int, conversation_id: int, *, after: int | None, before: int | None, limit: int
    ) -> list[dict[str, Any]]:
        head = None
        if self._stores.replica.enabled:  # the page may come from the replica: up to this seq
            head = await self._stores.conversations.member_head(conversation_id, user_id)
        else:
            await self._stores.conversations.require_member(conversation_id, user_id)
        page = await self._stores.messages.page(
            conversation_id, after=after, before=before, limit=min(limit, HISTORY_MAX), head=head
        )
        return [frames.message(event) for event in page]

    async def catch_up_page(
        self, conversation_id: int, after: int, limit: int, head: int | None = None
    ) -> list[dict[str, Any]]:
        """Events after `after`, ascending, for a session that already checked membership.
        `head`: the conversation's last seq the session knows committed (the replica may
        answer if it has replayed that far)."""
        page = await self._stores.messages.page(conversation_id, after=after, limit=limit, head=head)
        return [frames.message(event) for event in page]
