"""chatd: durable real-time chat over WebSocket."""

from __future__ import annotations

__version__ = "0.1.0"
