"""Whose presence one session follows (docs/protocol.md §4.9).

A presence change is published once, on the user's own channel; each session subscribes (through
the hub) to the users it may see: itself, and those who took part in a conversation of at most
CHATD_PRESENCE_MAX_GROUP_SIZE members with it, at most CHATD_PRESENCE_SNAPSHOT_MAX of them (the
lowest ids: exactly the `ready` snapshot). The set changes when

- the session joins a conversation (`conversation_added`): its members who took part are
  followed, and their current status is sent;
- someone takes part in a small conversation it follows: the publisher sends their status on
  the conversation's channel (presence.Presence.took_part), and it is followed from then on;
- a membership event in a small conversation (before or after it) may take someone out of
  reach (they left, the session's user was removed, the group grew past the limit) or bring
  someone in (it shrank to the limit): the whole set is read again, at most one read at a time
  and one a REFRESH_INTERVAL_S per session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from chatd.connection import dumps
from chatd.sessions.streams import Streams
from chatd.subscriber import Event, Subscriber

if TYPE_CHECKING:
    from chatd.runtime import Runtime

log = logging.getLogger("chatd.ws")
REFRESH_INTERVAL_S = 1.0


class Session(Subscriber, Protocol):
    runtime: Runtime
    streams: Streams


class Following:
    __slots__ = ("_again", "_session", "_task", "users")

    def __init__(self, session: Session) -> None:
        self._session = session
        self.users: set[int] = set()
        self._task: asyncio.Task[None] | None = None  # a refresh running, or waiting its turn
        self._again = False

    @property
    def _room(self) -> int:
        """How many more users may be followed (the user itself does not count)."""
        cap = self._session.runtime.settings.presence_snapshot_max
        return cap - len(self.users - {self._session.user_id})

    async def start(self) -> list[dict[str, Any]]:
        """Follow the user and everyone it may see; returns their presence for `ready`
        (subscribed first, so no change falls between the two)."""
        rt, uid = self._session.runtime, self._session.user_id
        found = await rt.presence.followed(uid)
        await self._add([uid, *found])
        snapshot = await rt.presence.view(found)
        for entry in snapshot:
            self._session.streams.presence_versions[entry["user_id"]] = entry["version"]
        return snapshot

    async def joined(self, cid: int, member_count: int) -> None:
        """The session follows a conversation it was just added to. Best effort, like every
        state event: the conversation is followed whatever happens here."""
        rt = self._session.runtime
        if member_count > rt.settings.presence_max_group_size:
            return
        try:
            await self._follow_now(await rt.presence.joined(cid, self._session.user_id))
        except Exception:
            log.info("following presence: joining failed", extra={"user_id": self._session.user_id})

    def took_part(self, event: Event) -> bool:
        """A presence event on a conversation's channel: its user took part in that small
        conversation. Followed from now on if there is room; False: not to be delivered."""
        uid = event["user_id"]
        if uid in self.users:
            return True
        if self._room <= 0:
            return False
        self.users.add(uid)
        self._session.runtime.tasks.spawn(self._subscribe([uid]))
        return True

    def refresh(self) -> None:
        """Read the whole set again soon (a membership change in a small conversation)."""
        if self._task is not None:
            self._again = True
            return
        self._task = asyncio.get_running_loop().create_task(self._refresh())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _refresh(self) -> None:
        rt, uid = self._session.runtime, self._session.user_id
        try:
            while self._session.close_code is None:
                self._again = False
                found = await rt.presence.followed(uid)
                gone = self.users - set(found) - {uid}
                rt.hub.unfollow(self._session, gone)
                self.users -= gone
                await self._follow_now({u: seen for u, seen in found.items() if u not in self.users})
                if not self._again:
                    break
                await asyncio.sleep(REFRESH_INTERVAL_S)
        except Exception:
            log.info("following presence: refresh failed", extra={"user_id": uid}, exc_info=True)
        finally:
            self._task = None

    async def _follow_now(self, found: dict[int, datetime | None]) -> None:
        """Follow these users (those there is room for) and send their current status."""
        new = [u for u in sorted(found) if u not in self.users][: max(self._room, 0)]
        if not new:
            return
        await self._add(new)
        for entry in await self._session.runtime.presence.view({u: found[u] for u in new}):
            event = {"type": "presence", **entry}
            self._session.streams.state(dumps(event), event)

    async def _add(self, uids: list[int]) -> None:
        self.users.update(uids)
        await self._session.runtime.hub.follow(self._session, uids)

    async def _subscribe(self, uids: list[int]) -> None:
        with contextlib.suppress(Exception):  # best effort, like every state event
            await self._session.runtime.hub.follow(self._session, uids)
