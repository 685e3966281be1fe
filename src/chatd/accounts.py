"""Registration, login, logout and token authentication."""

from __future__ import annotations

import re
from dataclasses import dataclass

from chatd import notices
from chatd.errors import ChatdError, Code
from chatd.fanout import Hub
from chatd.ratelimit import RateLimiter
from chatd.security import Passwords, hash_token, new_token
from chatd.storage import Stores


@dataclass(frozen=True, slots=True)
class Identity:
    user_id: int
    username: str
    token_hash: bytes
    share_read_state: bool


USERNAME = re.compile(r"^[a-z0-9_.-]{3,32}$")
MIN_PASSWORD, MAX_PASSWORD = 8, 1024


def normalise_username(raw: str) -> str:
    name = raw.strip().lower()
    if not USERNAME.match(name):
        raise ChatdError(
            Code.BAD_REQUEST, "username: 3-32 characters of a-z, 0-9, '_', '.', '-'", field="username"
        )
    return name


@dataclass(frozen=True, slots=True)
class Limiters:
    """Login attempts per (address, username) and per address; registrations per address."""

    login: RateLimiter
    login_address: RateLimiter
    register: RateLimiter


class Accounts:
    def __init__(self, stores: Stores, passwords: Passwords, limiters: Limiters, hub: Hub) -> None:
        self._stores = stores
        self._passwords = passwords
        self._limiters = limiters
        self._hub = hub

    async def register(self, username: str, password: str, client: str) -> dict[str, object]:
        name = normalise_username(username)
        if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
            raise ChatdError(
                Code.BAD_REQUEST,
                f"password: {MIN_PASSWORD} to {MAX_PASSWORD} characters",
                field="password",
            )
        # Counted once the request is well-formed, before the (costly) hash.
        await self._limiters.register.hit(client)
        user_id = await self._stores.accounts.create_user(name, await self._passwords.hash(password))
        if user_id is None:
            raise ChatdError(Code.USERNAME_TAKEN, "that username is taken")
        return {"user_id": user_id, "username": name}

    async def login(self, username: str, password: str, client: str) -> dict[str, object]:
        name = username.strip().lower()
        # Per address: one address cannot spray many usernames (each attempt costs an argon2
        # hash). Per address and name: guessing is slowed, yet nobody elsewhere can lock the
        # user out.
        await self._limiters.login_address.hit(client)
        await self._limiters.login.hit(f"{client}:{name}")
        found = await self._stores.accounts.credentials(name)
        ok = await self._passwords.verify(found[1] if found else None, password)
        if not ok or found is None:
            raise ChatdError(Code.INVALID_CREDENTIALS, "wrong username or password")
        token = new_token()
        await self._stores.accounts.add_token(hash_token(token), found[0])
        return {"token": token, "user_id": found[0], "username": name}

    async def authenticate(self, token: str) -> Identity:
        """Who a live token belongs to; `unauthorized` otherwise."""
        token_hash = hash_token(token)
        found = await self._stores.accounts.user_for_token(token_hash)
        if found is None:
            raise ChatdError(Code.UNAUTHORIZED, "invalid or revoked token")
        return Identity(found[0], found[1], token_hash, found[2])

    async def is_live(self, token_hash: bytes) -> bool:
        return await self._stores.accounts.user_for_token(token_hash) is not None

    async def live_tokens(self, token_hashes: list[bytes]) -> set[bytes]:
        """Which of these tokens are still valid (one query for a whole worker's sockets)."""
        return await self._stores.accounts.live_tokens(token_hashes)

    async def logout(self, token_hash: bytes) -> None:
        """Revoke the token and close every live WebSocket that authenticated with it."""
        user_id = await self._stores.accounts.delete_token(token_hash)
        if user_id is not None:
            await self._hub.publish_to_users([user_id], notices.revoke(token_hash))
