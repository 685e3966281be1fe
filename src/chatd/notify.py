"""Notification settings and push subscriptions: the service behind ``http_notify.py``.

A user's settings are do-not-disturb, whether pushes carry the message text (``push_preview``,
off by default) and the conversations they muted. Every change is published to the user's
channel as one ``notify_settings`` notice holding all of them, so each of the user's devices
replaces what it had (and after a subscriber outage the same notice is sent again: ``resend``).

Subscriptions belong to the device (bearer token) that registered them: deleting a token
deletes them (a foreign key), and ``forget_tokens`` / ``forget_user`` are the calls for
anything else that ends a device or an account.
"""

from __future__ import annotations

import logging
from typing import Any

from chatd import notices, webpush
from chatd.config import Settings
from chatd.errors import ChatdError, Code
from chatd.fanout import Hub
from chatd.storage import Stores
from chatd.subscriber import Subscriber

log = logging.getLogger("chatd.notify")
# Subscriptions one user keeps; registering one more forgets the oldest (browsers replace their
# endpoints without always telling the server).
SUBSCRIPTIONS_MAX = 20


class Notify:
    def __init__(self, stores: Stores, hub: Hub, settings: Settings, key: webpush.VapidKey | None) -> None:
        self._stores = stores
        self._hub = hub
        self._settings = settings
        self.key = key

    # -- settings ------------------------------------------------------------------------
    async def settings(self, user_id: int) -> dict[str, Any]:
        return await self._stores.notify.settings(user_id)

    async def change(self, user_id: int, dnd: bool | None, push_preview: bool | None) -> dict[str, Any]:
        await self._stores.notify.set_settings(user_id, dnd, push_preview)
        return await self._announce(user_id)

    async def mute(self, user_id: int, conversation_id: int, muted: bool) -> dict[str, Any]:
        await self._stores.notify.set_muted(conversation_id, user_id, muted)
        return await self._announce(user_id)

    async def _announce(self, user_id: int) -> dict[str, Any]:
        """After the COMMIT: the whole of the user's settings to each of their devices."""
        current = await self._stores.notify.settings(user_id)
        await self._hub.publish_to_users([user_id], notices.notify_settings(current))
        return current

    async def resend(self, subscribers: list[Subscriber]) -> None:
        """After a subscriber outage: a change published meanwhile reached no device here."""
        users = sorted({sub.user_id for sub in subscribers})
        if not users:
            return
        found = await self._stores.notify.many_settings(users)
        for sub in subscribers:
            if sub.close_code is None:
                sub.notice(notices.notify_settings(found[sub.user_id]))

    # -- subscriptions -------------------------------------------------------------------
    def public_key(self) -> str:
        if self.key is None:
            raise ChatdError(Code.PUSH_DISABLED, "this server sends no pushes (no VAPID key)")
        return self.key.public_key

    async def subscribe(self, user_id: int, token_hash: bytes, endpoint: str, p256dh: str, auth: str) -> int:
        self.public_key()
        if len(endpoint) > webpush.ENDPOINT_MAX:
            raise ChatdError(Code.BAD_REQUEST, "endpoint: too long", field="endpoint")
        if not webpush.allowed(endpoint, self._settings.push_services):
            raise ChatdError(
                Code.BAD_REQUEST, "endpoint: not on a push service this server sends to", field="endpoint"
            )
        problem = webpush.check_keys(p256dh, auth)
        if problem is not None:
            raise ChatdError(Code.BAD_REQUEST, problem, field="keys")
        found = await self._stores.notify.subscribe(
            user_id, token_hash, endpoint, p256dh, auth, SUBSCRIPTIONS_MAX
        )
        if found is None:
            raise ChatdError(Code.UNAUTHORIZED, "invalid or revoked token")
        return found

    async def unsubscribe(self, user_id: int, endpoint: str) -> None:
        if not await self._stores.notify.unsubscribe(user_id, endpoint):
            raise ChatdError(Code.NOT_FOUND, "no such subscription", field="endpoint")

    async def subscriptions(self, user_id: int, token_hash: bytes) -> list[dict[str, Any]]:
        rows = await self._stores.notify.subscriptions(user_id)
        return [
            {
                "id": row["id"],
                "endpoint": row["endpoint"],
                "created_at": row["created_at"],
                "this_device": bytes(row["token_hash"]) == token_hash,
            }
            for row in rows
        ]

    async def forget_tokens(self, token_hashes: list[bytes]) -> int:
        """Remove the subscriptions of these devices (tokens). Deleting a token row does it
        already (ON DELETE CASCADE); this is for a path that keeps the row."""
        return await self._stores.notify.forget_tokens(token_hashes) if token_hashes else 0

    async def forget_user(self, user_id: int) -> int:
        """Remove every subscription of the user (e.g. deactivation)."""
        return await self._stores.notify.forget_user(user_id)
