"""python-socketio relay for the benchmark: join rooms, relay `send` to the room, ack. No storage.

Runs in its own venv (bench/.peers/pysio): `uvicorn sio_server:app`, REDIS_URL in the
environment, one process per worker, behind nginx.
"""

from __future__ import annotations

import os
from typing import Any

import socketio  # type: ignore[import-not-found, unused-ignore]

mgr = socketio.AsyncRedisManager(os.environ["REDIS_URL"])
sio = socketio.AsyncServer(async_mode="asgi", client_manager=mgr, transports=["websocket"])
app = socketio.ASGIApp(sio)


@sio.event  # type: ignore[untyped-decorator, misc, unused-ignore]
async def join(sid: str, rooms: list[str]) -> bool:
    for room in rooms:
        await sio.enter_room(sid, room)
    return True


@sio.event  # type: ignore[untyped-decorator, misc, unused-ignore]
async def send(sid: str, data: dict[str, Any]) -> bool:
    await sio.emit("message", data, room=data["room"], skip_sid=sid)
    return True
