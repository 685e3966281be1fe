"""The write window (CHATD_WS_WINDOW_BYTES, docs/protocol.md §4.7) counts bytes on the wire.

A client that reads every frame but never answers a ping gets at most the window (plus the
frame that crossed it) before the worker stops writing, then the keepalive's close. Counted
in characters, text of three-byte characters went out three times the window ahead."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg
import orjson
from websockets.client import ClientProtocol
from websockets.frames import Close, Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from tests.conftest import Worker
from tests.helpers import Api, seed_history, ws_url

WINDOW = 16_384  # the smallest CHATD_WS_WINDOW_BYTES allows
BODY = "€" * 1000  # 1,000 characters, 3,000 bytes
MESSAGES = 60  # about eleven windows of it


async def test_the_window_counts_bytes_not_characters(
    spawn_worker: Callable[..., Worker], db: asyncpg.Connection
) -> None:
    worker = spawn_worker(
        CHATD_WS_WINDOW_BYTES=str(WINDOW), CHATD_PRESENCE_HEARTBEAT_S="0.5", CHATD_PRESENCE_TTL_S="2"
    )
    api = Api(worker.url)
    alice, bob = await api.user(), await api.user()
    cid = await api.direct(alice, bob)
    await seed_history(db, cid, alice.id, [BODY] * MESSAGES)

    # A client of its own (websockets' sans-I/O protocol): it reads everything and writes
    # nothing after its auth frame, so the pongs the protocol queues never leave.
    client = ClientProtocol(parse_uri(ws_url(worker.url)))
    reader, writer = await asyncio.open_connection("127.0.0.1", worker.port)
    client.send_request(client.connect())
    writer.write(b"".join(client.data_to_send()))
    while client.state is not State.OPEN:
        client.receive_data(await asyncio.wait_for(reader.read(65536), 20))
        assert client.handshake_exc is None, client.handshake_exc
    client.send_text(orjson.dumps({"type": "auth", "token": bob.token, "since": {str(cid): 0}}))
    writer.write(b"".join(client.data_to_send()))
    received = 0  # payload bytes of text frames
    close: Close | None = None
    while close is None:
        data = await asyncio.wait_for(reader.read(65536), 20)
        if not data:
            break
        client.receive_data(data)
        for event in client.events_received():
            if not isinstance(event, Frame):
                continue  # the handshake's response
            if event.opcode is Opcode.TEXT:
                received += len(event.data)
            elif event.opcode is Opcode.CLOSE:
                close = Close.parse(event.data)
    writer.close()
    await api.http.aclose()

    assert close is not None and close.code == 1011, close  # the keepalive gave up: the barrier
    frame = len(BODY.encode()) + 200  # one message frame, its envelope generously counted
    assert WINDOW / 2 < received <= WINDOW + frame, f"{received} bytes written with no ping answered"
