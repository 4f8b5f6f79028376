"""uvicorn's WebSocket protocol, answering a failed handshake with the gateway's JSON error body.

A request to /v1/events/ws that asks for an upgrade but is not a valid WebSocket handshake (no
Sec-WebSocket-Key, a wrong version, ...) never reaches the app: the websockets library refuses it
itself with a plain-text body. Every other refusal of the gateway is `{"error": {"code",
"message"}}`, so clients parse one shape; this protocol gives handshake refusals that shape too,
keeping the library's status and explanation.
"""

from __future__ import annotations

import functools
from http import HTTPStatus

import msgspec
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Response
from websockets.server import ServerProtocol

_CODES = {
    400: "invalid_websocket_handshake",
    403: "websocket_refused",
    405: "method_not_allowed",
    426: "websocket_upgrade_required",
    500: "internal",
}


def json_reject(conn: ServerProtocol, status: int | HTTPStatus, text: str) -> Response:
    """`ServerProtocol.reject` with a JSON error body instead of plain text."""
    status = HTTPStatus(status)
    message = text.strip().splitlines()[0] if text.strip() else status.phrase
    body = msgspec.json.encode({"error": {"code": _CODES.get(status.value, "websocket_handshake_failed"),
                                          "message": message}}).decode()
    response = ServerProtocol.reject(conn, status, body)
    del response.headers["Content-Type"]
    response.headers["Content-Type"] = "application/json"
    return response


class GatewayWebSocketProtocol(WebSocketsSansIOProtocol):
    """The protocol uvicorn picks by default when `websockets` is installed, with JSON refusals."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # The library builds every refusal (bad handshake, close before accept, 500) through
        # `reject`: replacing it on this connection's instance changes the body and nothing else.
        self.conn.reject = functools.partial(json_reject, self.conn)  # type: ignore[method-assign]
