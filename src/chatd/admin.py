"""What admins do: invites, creating users, deactivating and reactivating them, resetting a
password, granting and dropping admin. Every action is logged as one JSON line (who, what,
whom; logger ``chatd.admin``) and counted (``chatd_admin_actions_total``)."""

from __future__ import annotations

import logging
from typing import Any

from chatd import metrics
from chatd.accounts import Accounts, Identity, check_password, create_account
from chatd.errors import ChatdError, Code
from chatd.security import Passwords, hash_token, new_token
from chatd.storage import Stores
from chatd.storage.admin import UserChange

audit_log = logging.getLogger("chatd.admin")

MAX_INVITE_USES = 1000
INVITE_EXPIRY_S = (60, 365 * 86400)  # a minute to a year
DEFAULT_INVITE_EXPIRY_S = 7 * 86400
MAX_NOTE = 200


def audit(actor: dict[str, Any], action: str, target: dict[str, Any] | None = None, **details: Any) -> None:
    """One line per admin action: who (`actor_id`, `actor`), what (`action`), whom."""
    fields: dict[str, Any] = {**actor, "action": action}
    if target is not None:
        fields["target_id"], fields["target"] = target.get("user_id"), target.get("username")
    audit_log.info("admin action", extra={**fields, **details})
    metrics.ADMIN_ACTIONS.labels(action).inc()


def _who(identity: Identity) -> dict[str, Any]:
    return {"actor_id": identity.user_id, "actor": identity.username}


class Admin:
    def __init__(self, stores: Stores, passwords: Passwords, accounts: Accounts) -> None:
        self._stores = stores
        self._passwords = passwords
        self._accounts = accounts

    @staticmethod
    def require(identity: Identity) -> None:
        if not identity.is_admin:
            raise ChatdError(Code.FORBIDDEN, "only an admin can do that")

    # -- invites -------------------------------------------------------------------------
    async def create_invite(
        self, actor: Identity, max_uses: int, expires_in_s: int, note: str
    ) -> tuple[str, dict[str, Any]]:
        """A new invite token (shown once: only its hash is kept) and the invite."""
        self.require(actor)
        token = new_token()
        invite = await self._stores.admin.create_invite(
            hash_token(token), actor.user_id, expires_in_s, max_uses, note
        )
        audit(_who(actor), "create_invite", invite_id=invite["id"], max_uses=max_uses)
        return token, invite

    async def invites(self, actor: Identity) -> list[dict[str, Any]]:
        self.require(actor)
        return await self._stores.admin.invites()

    async def revoke_invite(self, actor: Identity, invite_id: int) -> dict[str, Any]:
        self.require(actor)
        invite = await self._stores.admin.revoke_invite(invite_id)
        if invite is None:
            raise ChatdError(Code.NOT_FOUND, "no such invite")
        audit(_who(actor), "revoke_invite", invite_id=invite_id)
        return invite

    # -- users ---------------------------------------------------------------------------
    async def users(self, actor: Identity, after: int, limit: int) -> list[dict[str, Any]]:
        self.require(actor)
        return await self._stores.admin.users(after, limit)

    async def create_user(self, actor: Identity, username: str, password: str, admin: bool) -> dict[str, Any]:
        self.require(actor)
        user = await create_account(self._stores, self._passwords, username, password, admin)
        audit(_who(actor), "create_user", user, admin=admin)
        return user

    def _check(self, change: UserChange, target: int) -> dict[str, Any]:
        if not change.facts.actor_is_admin:  # dropped or deactivated since the token was read
            raise ChatdError(Code.FORBIDDEN, "only an admin can do that")
        if change.facts.target is None:
            raise ChatdError(Code.USER_NOT_FOUND, "no such user", user_ids=[target])
        return change.facts.target

    def _last_admin(self, change: UserChange, user: dict[str, Any]) -> None:
        if user["admin"] and not user["deactivated"] and change.facts.active_admins <= 1:
            raise ChatdError(Code.LAST_ADMIN, "this is the last admin; make another admin first")

    async def deactivate(self, actor: Identity, target: int) -> tuple[dict[str, Any], int]:
        """Deactivate and revoke every token: each socket of the user closes (4001) on every
        worker, through the path a logout takes. Their messages and memberships stay."""
        self.require(actor)
        if target == actor.user_id:
            raise ChatdError(Code.CANNOT_DEACTIVATE_SELF, "you cannot deactivate yourself")
        async with self._stores.admin.change_user(actor.user_id, target) as change:
            self._last_admin(change, self._check(change, target))
            user, revoked = await change.deactivate()
        await self._accounts.revoke(target, revoked)
        audit(_who(actor), "deactivate", user, revoked_sessions=len(revoked))
        return user, len(revoked)

    async def reactivate(self, actor: Identity, target: int) -> dict[str, Any]:
        """Login works again; tokens revoked by the deactivation stay revoked."""
        self.require(actor)
        async with self._stores.admin.change_user(actor.user_id, target) as change:
            self._check(change, target)
            user = await change.reactivate()
        audit(_who(actor), "reactivate", user)
        return user

    async def reset_password(self, actor: Identity, target: int, password: str) -> tuple[dict[str, Any], int]:
        """A new password, and every token of the user revoked (their devices log in again)."""
        self.require(actor)
        check_password(password)
        password_hash = await self._passwords.hash(password)
        async with self._stores.admin.change_user(actor.user_id, target) as change:
            self._check(change, target)
            user, revoked = await change.set_password(password_hash)
        await self._accounts.revoke(target, revoked)
        audit(_who(actor), "reset_password", user, revoked_sessions=len(revoked))
        return user, len(revoked)

    async def set_admin(self, actor: Identity, target: int, admin: bool) -> dict[str, Any]:
        self.require(actor)
        async with self._stores.admin.change_user(actor.user_id, target) as change:
            user = self._check(change, target)
            if not admin:
                self._last_admin(change, user)
            user = await change.set_admin(admin)
        audit(_who(actor), "grant_admin" if admin else "drop_admin", user)
        return user
