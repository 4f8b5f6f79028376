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
    error body first.

    One timer per connection, not per request: a request head only notes when it began, and the
    timer, when it fires, re-arms itself for whatever time the current head has left. On a busy
    keep-alive connection that is one timer every few seconds instead of one per request.
    """

    _head_timer: asyncio.TimerHandle | None = None
    _awaiting_head = True
    _head_bytes = 0
    _head_started = 0.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        settings = get_settings()
        self._head_timeout, self._max_head_bytes = settings.gateway_header_timeout_seconds, settings.gateway_max_header_bytes
        self._await_head()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._awaiting_head:  # the next request on a kept-alive connection
            self._await_head()

    def on_headers_complete(self) -> None:
        self._awaiting_head = False
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        if self._awaiting_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._awaiting_head and self._head_bytes > self._max_head_bytes:
            self._refuse(_reply(431, "Request Header Fields Too Large", "headers_too_large",
                                f"the request head is over {self._max_head_bytes} bytes"))

    def send_400_response(self, msg: str) -> None:
        """Unparseable HTTP gets the same JSON error body as every other rejection."""
        self._refuse(_reply(400, "Bad Request", "malformed_http", msg))

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def _await_head(self) -> None:
        self._awaiting_head, self._head_bytes, self._head_started = True, 0, self.loop.time()
        if self._head_timer is None:
            self._head_timer = self.loop.call_at(self._head_started + self._head_timeout, self._check_head)

    def _check_head(self) -> None:
        self._head_timer = None
        if not self._awaiting_head or self.transport.is_closing():
            return  # re-armed by the next request's head
        deadline = self._head_started + self._head_timeout
        if self.loop.time() < deadline:  # a later head than the one this timer was set for
            self._head_timer = self.loop.call_at(deadline, self._check_head)
            return
        self._refuse(_reply(408, "Request Timeout", "header_timeout",
                            f"the request head must arrive within {self._head_timeout:g} s"))

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
