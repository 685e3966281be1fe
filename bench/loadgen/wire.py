"""The load generators' WebSocket client: picows, or `websockets` where permessage-deflate is wanted.

picows (Cython: frames parsed and masked in C, handed to a callback straight from the protocol's
receive buffer, sends written without a task or a drain) costs the load generators a fraction of
what `websockets` does per frame (bench/README.md, "load-generator ceiling"). It has no
permessage-deflate, so `--deflate` runs keep `websockets`. `make` is the one place that
chooses; both wires look alike to bench/loadgen/conn.py:

- every text (or binary) message goes to `on_text(text, at)`, `at` being when it was read;
- `closed` completes when the connection is gone, whoever ended it, and `on_closed` runs once;
- `send` raises once the connection is closing or closed, and waits while the socket's write
  buffer is above 32 KiB (as `websockets` does); `send_nowait` is for frames whose loss does
  not matter (pongs, delivery confirmations): it never raises;
- `abort` drops the TCP connection without a close handshake; `close` does the handshake.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from importlib import metadata
from typing import Any, Protocol

from picows import (
    WSCloseCode,
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    WSUpgradeResponse,
    ws_connect,
)
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect_websockets

from bench.loadgen.recorder import now

OPEN_TIMEOUT = 60.0
CLOSE_TIMEOUT = 3.0
MAX_MESSAGE = 2**24
WRITE_LIMIT = 2**15  # websockets' default high-water mark; the low one is a quarter of it

OnText = Callable[[str, float], None]
OnClosed = Callable[[], None]


class Wire(Protocol):
    closed: asyncio.Future[None]

    async def open(self, url: str, src_ip: str | None) -> None: ...

    async def send(self, data: str | bytes) -> None: ...

    def send_nowait(self, data: str | bytes) -> None: ...

    def abort(self) -> None: ...

    async def close(self) -> None: ...


def make(deflate: bool, on_text: OnText, on_closed: OnClosed) -> Wire:
    """A wire not yet connected: picows, or `websockets` for permessage-deflate."""
    return WebsocketsWire(on_text, on_closed) if deflate else PicoWire(on_text, on_closed)


def client(deflate: bool) -> str:
    """Which client `make` uses, with its version (the results' config records it)."""
    name = "websockets" if deflate else "picows"
    return f"{name} {metadata.version(name)}"


def _local(src_ip: str | None) -> dict[str, Any]:
    return {"local_addr": (src_ip, 0)} if src_ip else {}


class PicoWire(WSListener):
    """A picows listener: `on_ws_frame` runs inside the protocol's `data_received`."""

    def __init__(self, on_text: OnText, on_closed: OnClosed) -> None:
        super().__init__()
        self.on_text = on_text
        self.on_closed = on_closed
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: WSTransport | None = None
        self._paused: asyncio.Future[None] | None = None
        self._parts: list[bytes] | None = None  # a fragmented message being put together

    async def open(self, url: str, src_ip: str | None) -> None:
        """Connect (`OPEN_TIMEOUT` covers TCP and the handshake); frames that come in the same read
        as the handshake's response reach `on_text` before this returns."""

        def factory(_request: WSUpgradeRequest, _response: WSUpgradeResponse) -> PicoWire:
            return self

        transport, listener = await asyncio.wait_for(
            ws_connect(
                factory,
                url,
                websocket_handshake_timeout=OPEN_TIMEOUT,
                max_frame_size=MAX_MESSAGE,
                enable_auto_ping=False,
                enable_auto_pong=True,
                **_local(src_ip),
            ),
            OPEN_TIMEOUT,
        )
        # picows hands back no listener when the peer hung up before the handshake completed
        if listener is not self or transport.is_disconnected:
            transport.disconnect(False)
            raise ConnectionError("connection closed during the opening handshake")

    # -- picows callbacks ------------------------------------------------------------------
    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        transport.underlying_transport.set_write_buffer_limits(high=WRITE_LIMIT)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind == WSMsgType.TEXT or kind == WSMsgType.BINARY:
            if frame.fin:
                self.on_text(frame.get_payload_as_utf8_text(), now())
            else:
                self._parts = [frame.get_payload_as_bytes()]
        elif kind == WSMsgType.CONTINUATION:
            if self._parts is not None:
                self._parts.append(frame.get_payload_as_bytes())
                if frame.fin:
                    text, self._parts = b"".join(self._parts).decode(), None
                    self.on_text(text, now())
        elif kind == WSMsgType.CLOSE:  # answer the peer's close, then hang up (RFC 6455 §5.5.1)
            if frame.payload_size >= 2:
                transport.send_close(frame.get_close_code(), frame.get_close_message())
            else:
                transport.send_close(WSCloseCode.OK)
            transport.disconnect()
        # PING is answered by picows (enable_auto_pong); PONG needs nothing

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if self._paused is not None and not self._paused.done():
            self._paused.set_result(None)
        if not self.closed.done():
            self.closed.set_result(None)
            self.on_closed()

    def pause_writing(self) -> None:
        if self._paused is None:
            self._paused = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        paused, self._paused = self._paused, None
        if paused is not None and not paused.done():
            paused.set_result(None)

    # -- Wire --------------------------------------------------------------------------------
    async def send(self, data: str | bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_disconnected or transport.is_close_frame_sent:
            raise ConnectionError("connection closed")
        transport.send(WSMsgType.TEXT, data)
        if self._paused is not None:
            await asyncio.shield(self._paused)

    def send_nowait(self, data: str | bytes) -> None:
        if self.transport is not None:
            self.transport.send(WSMsgType.TEXT, data)  # a no-op once closing or closed

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.disconnect(graceful=False)

    async def close(self) -> None:
        if self.transport is None or self.closed.done():
            return
        self.transport.send_close(WSCloseCode.OK)
        try:
            await asyncio.wait_for(asyncio.shield(self.closed), CLOSE_TIMEOUT)
        except TimeoutError:
            self.abort()


class WebsocketsWire:
    """`websockets` (permessage-deflate runs): one reader task per socket."""

    def __init__(self, on_text: OnText, on_closed: OnClosed) -> None:
        self.on_text = on_text
        self.on_closed = on_closed
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.ws: ClientConnection | None = None
        self.reader: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def open(self, url: str, src_ip: str | None) -> None:
        self.ws = await ws_connect_websockets(
            url,
            max_size=MAX_MESSAGE,
            compression="deflate",
            open_timeout=OPEN_TIMEOUT,
            ping_interval=None,
            close_timeout=2,
            write_limit=WRITE_LIMIT,
            **_local(src_ip),
        )
        self.reader = asyncio.create_task(self._read(self.ws))

    async def _read(self, ws: ClientConnection) -> None:
        # closed or reset: the scenario sees it in its counts
        try:
            with contextlib.suppress(Exception):
                async for raw in ws:
                    self.on_text(raw if isinstance(raw, str) else raw.decode(), now())
        finally:
            if not self.closed.done():
                self.closed.set_result(None)
                self.on_closed()

    async def send(self, data: str | bytes) -> None:
        if self.ws is None:
            raise ConnectionError("not connected")
        await self.ws.send(data if isinstance(data, str) else data.decode())

    def send_nowait(self, data: str | bytes) -> None:
        task = asyncio.get_running_loop().create_task(self._send_quietly(data))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_quietly(self, data: str | bytes) -> None:
        with contextlib.suppress(Exception):
            await self.send(data)

    def abort(self) -> None:
        if self.ws is not None:
            self.ws.transport.abort()
        if self.reader is not None:
            self.reader.cancel()

    async def close(self) -> None:
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.ws.close(), CLOSE_TIMEOUT)
        if self.reader is not None:
            self.reader.cancel()
