"""Registration, login, logout, token authentication, and what a user does with their own
account: password, display name, devices (sessions)."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from chatd import notices
from chatd.errors import ChatdError, Code
from chatd.fanout import Hub
from chatd.ratelimit import RateLimiter
from chatd.security import Passwords, hash_token, new_token
from chatd.storage import Stores
from chatd.storage.accounts import INVALID_INVITE_MESSAGE


@dataclass(frozen=True, slots=True)
class Identity:
    user_id: int
    username: str
    token_hash: bytes
    share_read_state: bool
    is_admin: bool = False
    display_name: str | None = None


USERNAME = re.compile(r"^[a-z0-9_.-]{3,32}$")
MIN_PASSWORD, MAX_PASSWORD = 8, 1024
MAX_DISPLAY_NAME = 64
MAX_USER_AGENT = 256
REGISTRATION_POLICIES = ("invite", "open", "closed")


def normalise_username(raw: str) -> str:
    name = raw.strip().lower()
    if not USERNAME.match(name):
        raise ChatdError(
            Code.BAD_REQUEST, "username: 3-32 characters of a-z, 0-9, '_', '.', '-'", field="username"
        )
    return name


def check_password(password: str, field: str = "password") -> str:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise ChatdError(
            Code.BAD_REQUEST, f"{field}: {MIN_PASSWORD} to {MAX_PASSWORD} characters", field=field
        )
    return password


def display_name(raw: str | None) -> str | None:
    """Trimmed, 1-64 characters without control characters; blank or None clears it."""
    if raw is None or not raw.strip():
        return None
    name = raw.strip()
    if len(name) > MAX_DISPLAY_NAME or any(unicodedata.category(ch) == "Cc" for ch in name):
        raise ChatdError(
            Code.BAD_REQUEST,
            f"display_name: at most {MAX_DISPLAY_NAME} characters, no control characters",
            field="display_name",
        )
    return name


def device(user_agent: str | None) -> str:
    """The user agent as stored for the device list: printable, at most 256 characters."""
    text = "".join(ch for ch in (user_agent or "") if ch.isprintable())
    return text[:MAX_USER_AGENT]


async def create_account(
    stores: Stores, passwords: Passwords, username: str, password: str, admin: bool = False
) -> dict[str, Any]:
    """A user made by an admin or on the server host (`chatd admin create-user`): no invite."""
    name = normalise_username(username)
    check_password(password)
    user_id = await stores.accounts.create_user(name, await passwords.hash(password), admin=admin)
    if user_id is None:
        raise ChatdError(Code.USERNAME_TAKEN, "that username is taken")
    return {"user_id": user_id, "username": name, "admin": admin}


@dataclass(frozen=True, slots=True)
class Limiters:
    """Login attempts per (address, username) and per address; registrations per address."""

    login: RateLimiter
    login_address: RateLimiter
    register: RateLimiter


class Accounts:
    def __init__(
        self, stores: Stores, passwords: Passwords, limiters: Limiters, hub: Hub, registration: str = "invite"
    ) -> None:
        self._stores = stores
        self._passwords = passwords
        self._limiters = limiters
        self._hub = hub
        assert registration in REGISTRATION_POLICIES, registration
        self.registration = registration

    async def register(
        self, username: str, password: str, client: str, invite: str | None
    ) -> dict[str, object]:
        name = normalise_username(username)
        check_password(password)
        if self.registration == "closed":
            raise ChatdError(
                Code.REGISTRATION_CLOSED, "registration is closed here; an admin creates accounts"
            )
        if self.registration == "invite" and not invite:
            raise ChatdError(Code.INVITE_REQUIRED, "registering here needs an invite", field="invite")
        # Counted once the request is well-formed, before the (costly) hash; invites too.
        await self._limiters.register.hit(client)
        invite_hash = hash_token(invite) if self.registration == "invite" and invite else None
        if invite_hash is not None and not await self._stores.accounts.invite_usable(invite_hash):
            raise ChatdError(Code.INVALID_INVITE, INVALID_INVITE_MESSAGE, field="invite")
        password_hash = await self._passwords.hash(password)
        user_id = await self._stores.accounts.create_user(name, password_hash, invite_hash=invite_hash)
        if user_id is None:
            raise ChatdError(Code.USERNAME_TAKEN, "that username is taken")
        return {"user_id": user_id, "username": name}

    async def login(
        self, username: str, password: str, client: str, user_agent: str | None = None
    ) -> dict[str, object]:
        name = username.strip().lower()
        # Per address: one address cannot spray many usernames (each attempt costs an argon2
        # hash). Per address and name: guessing is slowed, yet nobody elsewhere can lock the
        # user out.
        await self._limiters.login_address.hit(client)
        await self._limiters.login.hit(f"{client}:{name}")
        found = await self._stores.accounts.credentials(name)
        ok = await self._passwords.verify(found.password_hash if found else None, password)
        if not ok or found is None:
            raise ChatdError(Code.INVALID_CREDENTIALS, "wrong username or password")
        token = new_token()
        if found.deactivated or not await self._stores.accounts.add_token(
            hash_token(token), found.user_id, found.password_hash, device(user_agent), client
        ):
            # Deactivated, or deactivated (or the password changed) while the hash was checked.
            again = await self._stores.accounts.credentials(name)
            if again is not None and again.deactivated:
                raise ChatdError(Code.ACCOUNT_DEACTIVATED, "this account is deactivated; ask an admin")
            raise ChatdError(Code.INVALID_CREDENTIALS, "wrong username or password")
        return {"token": token, "user_id": found.user_id, "username": name}

    async def authenticate(self, token: str) -> Identity:
        """Who a live token belongs to; `unauthorized` otherwise."""
        token_hash = hash_token(token)
        found = await self._stores.accounts.user_for_token(token_hash)
        if found is None:
            raise ChatdError(Code.UNAUTHORIZED, "invalid or revoked token")
        return Identity(
            found.user_id,
            found.username,
            token_hash,
            found.share_read_state,
            found.is_admin,
            found.display_name,
        )

    async def is_live(self, token_hash: bytes) -> bool:
        return await self._stores.accounts.user_for_token(token_hash) is not None

    async def live_tokens(self, token_hashes: list[bytes]) -> set[bytes]:
        """Which of these tokens are still valid (one query for a whole worker's sockets)."""
        return await self._stores.accounts.live_tokens(token_hashes)

    async def revoke(self, user_id: int, token_hashes: list[bytes]) -> None:
        """Close, on every worker, each live WebSocket of these (already deleted) tokens: the
        path of every revocation (logout, a revoked device, a password change, deactivation),
        so the same race rules hold for all (Session.start checks its token again)."""
        if token_hashes:
            await self._hub.publish_to_users([user_id], notices.revoke(*token_hashes))

    async def logout(self, token_hash: bytes) -> None:
        """Revoke the token and close every live WebSocket that authenticated with it."""
        user_id = await self._stores.accounts.delete_token(token_hash)
        if user_id is not None:
            await self.revoke(user_id, [token_hash])

    # -- the user's own account ------------------------------------------------------------
    async def change_password(self, identity: Identity, current: str, new: str, client: str) -> int:
        """Needs the current password; revokes every other token of the user. How many."""
        check_password(new, "new_password")
        await self._limiters.login.hit(f"{client}:{identity.username}")  # guessing, as for login
        stored = await self._stores.accounts.password_hash(identity.user_id)
        if not await self._passwords.verify(stored, current) or stored is None:
            raise ChatdError(Code.WRONG_PASSWORD, "the current password is wrong", field="current_password")
        new_hash = await self._passwords.hash(new)
        revoked = await self._stores.accounts.change_password(
            identity.user_id, stored, new_hash, identity.token_hash
        )
        if revoked is None:  # changed by another request while this one hashed
            raise ChatdError(Code.WRONG_PASSWORD, "the current password is wrong", field="current_password")
        await self.revoke(identity.user_id, revoked)
        return len(revoked)

    async def set_display_name(self, identity: Identity, raw: str | None) -> str | None:
        name = display_name(raw)
        await self._stores.accounts.set_display_name(identity.user_id, name)
        return name

    async def sessions(self, identity: Identity) -> list[dict[str, Any]]:
        found = []
        for row in await self._stores.accounts.sessions(identity.user_id):
            current = bytes(row.pop("token_hash")) == identity.token_hash
            found.append({**row, "current": current})
        return found

    async def revoke_session(self, identity: Identity, session_id: int) -> None:
        token_hash = await self._stores.accounts.delete_session(identity.user_id, session_id)
        if token_hash is None:
            raise ChatdError(Code.NOT_FOUND, "no such session")
        await self.revoke(identity.user_id, [token_hash])
