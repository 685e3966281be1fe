"""What the subscriber side of both Redis brokers (one Redis, a cluster) shares: the hub's two
callbacks, the state callers wait on while a connection is being restored, the PING tokens
whose PONG confirms that earlier subscribes are active, and handing a message to the hub.
"""

from __future__ import annotations

import asyncio
import secrets

from chatd.broker import OnMessage, OnResync, ignore_message, ignore_resync
from chatd.outbox import CONTROL_CHANNEL, RESYNC


class Subscribing:
    def __init__(self) -> None:
        self._up = asyncio.Event()  # set while callers' subscribes may run
        self._lock = asyncio.Lock()  # a subscribe never runs while the connection is restored
        self._pongs: dict[bytes, asyncio.Future[None]] = {}
        self._on_message: OnMessage = ignore_message
        self._on_resync: OnResync = ignore_resync

    def _expect_pong(self) -> tuple[bytes, asyncio.Future[None]]:
        """A fresh PING token and the future its PONG resolves (forget it with `_pongs.pop`)."""
        token = secrets.token_hex(8).encode()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pongs[token] = future
        return token, future

    def _ponged(self, token: bytes) -> None:
        future = self._pongs.get(token)
        if future is not None and not future.done():
            future.set_result(None)

    def _received(self, channel: str, data: bytes) -> None:
        if channel == CONTROL_CHANNEL:
            if data == RESYNC:  # some worker dropped publishes it could not make
                self._on_resync()
            return
        self._on_message(channel, data)
