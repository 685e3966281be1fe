"""What uvicorn answers on its own, before any route, in chatd's shapes (protocol.md §1, §6):
a request its HTTP parser refuses, a refused WebSocket handshake, and the close of a message
over the size limit.

`server.py` passes these protocol classes to uvicorn instead of its own.
"""

from __future__ import annotations

import dataclasses
import http
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import CloseCode
from websockets.http11 import Response
from websockets.server import ServerProtocol

from chatd.errors import ChatdError, Code

# The code of a refused handshake by its HTTP status; any other (400, 414, 426, 431, 505: a
# malformed upgrade request) is bad_request.
_HANDSHAKE_CODES = {403: Code.FORBIDDEN, 405: Code.METHOD_NOT_ALLOWED, 500: Code.INTERNAL}


def error_body(code: Code, message: str) -> bytes:
    return orjson.dumps({"error": ChatdError(code, message).to_dict()})


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's HTTP protocol; a request its parser refuses gets chatd's JSON 400."""

    def send_400_response(self, msg: str) -> None:
        body = error_body(Code.BAD_REQUEST, "invalid HTTP request")
        content = [STATUS_LINE[400]]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend(
            [
                b"content-type: application/json\r\n",
                b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
                b"connection: close\r\n",
                b"\r\n",
                body,
            ]
        )
        self.transport.write(b"".join(content))
        self.transport.close()


class _ServerProtocol(ServerProtocol):
    def reject(self, status: http.HTTPStatus | int, text: str) -> Response:
        """A refused handshake (a missing key, a wrong method or version): JSON, not text."""
        response = super().reject(status, text)
        code = _HANDSHAKE_CODES.get(response.status_code, Code.BAD_REQUEST)
        message = text.strip().removeprefix("Failed to open a WebSocket connection: ").rstrip(".")
        body = error_body(code, message or response.reason_phrase)
        response.headers["Content-Type"] = "application/json"
        response.headers["Content-Length"] = str(len(body))
        return dataclasses.replace(response, body=body)

    def fail(self, code: CloseCode | int, reason: str = "") -> None:
        """1009 has one reason, however the message was too big (one frame or fragments)."""
        if code == CloseCode.MESSAGE_TOO_BIG:
            reason = f"frame exceeds limit of {self.max_message_size} bytes"
        super().fail(code, reason)


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets-sansio protocol with the handshake and close rules above."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conn = _ServerProtocol(
            extensions=self.conn.available_extensions,
            max_size=self.config.ws_max_size,
            logger=self.conn.logger,
        )
