"""uvicorn's httptools protocol, hardened against slow and oversized request heads.

uvicorn bounds neither how long a client may take to send a request's head (a connection that
sends nothing, or drips headers, stays open forever: slowloris) nor how large the head may grow
(a 10 MB header was read and accepted). Both are bounded here, per connection, before the app
sees anything; the body's own deadline is the app's (`GATEWAY_BODY_TIMEOUT_SECONDS`, 408).
"""

from __future__ import annotations

import asyncio

import msgspec
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ingest_platform.settings import get_settings


def _reply(status: int, reason: str, code: str, message: str) -> bytes:
    body = msgspec.json.encode({"error": {"code": code, "message": message}})
    head = (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n")
    return head.encode() + body


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """Closes a connection whose request head is incomplete after GATEWAY_HEADER_TIMEOUT_SECONDS
    (408), larger than GATEWAY_MAX_HEADER_BYTES (431) or not HTTP (400), answering with a JSON
    error body first."""

    _head_timer: asyncio.TimerHandle | None = None
    _awaiting_head = True
    _head_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_head()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._awaiting_head:  # the next request on a kept-alive connection
            self._await_head()

    def on_headers_complete(self) -> None:
        self._awaiting_head = False
        self._cancel_head_timer()
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        if self._awaiting_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._awaiting_head and self._head_bytes > get_settings().gateway_max_header_bytes:
            self._refuse(_reply(431, "Request Header Fields Too Large", "headers_too_large",
                                f"the request head is over {get_settings().gateway_max_header_bytes} bytes"))

    def send_400_response(self, msg: str) -> None:
        """Unparseable HTTP gets the same JSON error body as every other rejection."""
        self._refuse(_reply(400, "Bad Request", "malformed_http", msg))

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def _await_head(self) -> None:
        self._awaiting_head, self._head_bytes = True, 0
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(get_settings().gateway_header_timeout_seconds, self._head_too_slow)

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self._awaiting_head:
            self._refuse(_reply(408, "Request Timeout", "header_timeout",
                                f"the request head must arrive within {get_settings().gateway_header_timeout_seconds} s"))

    def _refuse(self, response: bytes) -> None:
        self._cancel_head_timer()
        self._awaiting_head = False
        if not self.transport.is_closing():
            self.transport.write(response)
            self.transport.close()

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
