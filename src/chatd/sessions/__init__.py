"""The sessions layer: one client connection's life as a state machine (state.py), between
the WebSocket transport (ws.py) and the services and hub below.

- admission.py: `authenticate`: the first frame, the token, the connection cap;
- session.py: `Session` (the hub's Subscriber): frames in, events out;
- state.py: the states, what each accepts, and every close code a session chooses;
- sync.py: `ready`, catch-up, `synced`, and following conversations added while connected;
- streams.py: per-conversation cursors and held state events (no gap, no duplicate);
- sends.py: pipelined sends within the send window, acked in send order.
"""

from __future__ import annotations

from chatd.sessions.admission import authenticate
from chatd.sessions.session import Session

__all__ = ["Session", "authenticate"]
