"""Password hashing (argon2id) and bearer tokens (random, stored as SHA-256)."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from chatd.errors import ChatdError, Code

TOKEN_BYTES = 32
T = TypeVar("T")


class Passwords:
    """Runs the KDF in a queue of fixed width, off the event loop.

    At most `concurrency` hashes run at once (each costs a core for tens of milliseconds), and
    at most `queue` more wait for a turn; past that a login or registration is refused with
    `unavailable` at once, so a spray from many addresses cannot starve everyone else's requests.
    """

    def __init__(self, time_cost: int, memory_kib: int, concurrency: int = 1, queue: int = 16) -> None:
        self._hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=1)
        # Verified against when the user does not exist, so timing does not reveal usernames.
        self._dummy = self._hasher.hash(secrets.token_hex(16))
        self._executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="argon2")
        self._capacity = concurrency + queue
        self._admitted = 0

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        if self._admitted >= self._capacity:
            raise ChatdError(Code.UNAVAILABLE, "too many logins in progress; retry shortly")
        self._admitted += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        finally:
            self._admitted -= 1

    async def hash(self, password: str) -> str:
        return await self._run(self._hasher.hash, password)

    async def verify(self, stored: str | None, password: str) -> bool:
        return await self._run(self._verify, stored or self._dummy, password, stored)

    def _verify(self, stored: str, password: str, real: str | None) -> bool:
        try:
            ok = self._hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return False
        return ok and real is not None

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(token: str) -> bytes:
    # Tokens carry 256 bits of entropy, so a fast hash is enough to make a stolen table useless.
    return hashlib.sha256(token.encode()).digest()
