"""The hot path: POST /v1/events answered from the HTTP parser's callbacks, without an ASGI cycle.

For each request uvicorn builds an ASGI scope, a RequestResponseCycle with an asyncio.Event, a
message dict per receive and send, and writes the response head and body in two syscalls; the
endpoint then needs an asyncio.timeout for the body. For a single event that was most of the
server's CPU. `GatewayHttpProtocol` spots POST /v1/events when its head is parsed, collects the
body as the parser delivers it, runs `ingest.answer` and writes the response in one write.
Everything else (other routes, WebSocket upgrades) goes to uvicorn and the Starlette app as before,
and the guards of `GuardedHttpToolsProtocol` apply to both.

`Exchange` stands in for uvicorn's RequestResponseCycle where uvicorn's connection handling touches
it (pipelined requests, keep-alive, graceful shutdown, disconnects), so that handling is unchanged.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import STATUS_LINE

from ingest_platform.gateway.ingest import ROUTE, answer, body_too_large, client_gone, within_body_deadline
from ingest_platform.gateway.protocol import GuardedHttpToolsProtocol
from ingest_platform.gateway.state import Gateway

_PATH = ROUTE.encode()
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class GatewayHttpProtocol(GuardedHttpToolsProtocol):
    """uvicorn's protocol with its guards, plus the direct path for POST /v1/events."""

    def on_headers_complete(self) -> None:
        gateway: Gateway | None = self.app_state.get("gateway")  # the lifespan's state, once started
        if (gateway is None or self.url != _PATH or self.parser.get_method() != b"POST"
                or self.parser.should_upgrade()):
            super().on_headers_complete()
            return
        self._awaiting_head = False
        keep_alive = self.parser.get_http_version() != "1.0" and self.parser.should_keep_alive()
        previous, self.cycle = self.cycle, Exchange(self, gateway, keep_alive)  # type: ignore[assignment]
        if previous is None or previous.response_complete:
            self._start_asgi_task(self.cycle, self.app)  # runs Exchange.run_asgi, tracked for shutdown
        else:  # a pipelined request waits for the one before it, as in uvicorn
            self.flow.pause_reading()
            self.pipeline.appendleft((self.cycle, self.app))

    def on_body(self, body: bytes) -> None:
        if isinstance(self.cycle, Exchange):
            self.cycle.add_body(body)
        else:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if isinstance(self.cycle, Exchange):
            self.cycle.end_body()
        else:
            super().on_message_complete()


class Exchange:
    """One POST /v1/events on a connection: its body as it arrives, then its answer."""

    def __init__(self, protocol: GatewayHttpProtocol, gateway: Gateway, keep_alive: bool):
        self.protocol, self.gateway, self.keep_alive = protocol, gateway, keep_alive
        self.headers = dict(protocol.headers)
        self.expect_100_continue = protocol.expect_100_continue
        self.chunks: list[bytes] = []
        self.size = 0
        self.complete = self.too_large = False
        self.disconnected = self.response_complete = False  # read and set by uvicorn's protocol
        self.message_event = self  # uvicorn calls `cycle.message_event.set()` when the client goes away
        self._waiter: asyncio.Future | None = None

    # --- fed by the parser ---

    def add_body(self, chunk: bytes) -> None:
        if self.too_large or self.response_complete:
            return  # the rest of a refused body is parsed and dropped, the connection kept
        self.size += len(chunk)
        if self.size > self.gateway.limits.max_body_bytes:
            self.too_large, self.chunks = True, []
            self.set()
        else:
            self.chunks.append(chunk)

    def end_body(self) -> None:
        self.complete = True
        self.set()

    def set(self) -> None:
        """Wakes `read_body`: the body is complete or too large, or the client went away."""
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # --- the answer ---

    async def run_asgi(self, app) -> None:
        """Called by uvicorn's protocol like a cycle's ASGI run; `app` is not needed here."""
        client = self.protocol.client[0] if self.protocol.client else None
        status, payload, headers = await answer(self.gateway, self.headers, client, self.read_body)
        self.respond(status, payload, headers)

    async def read_body(self) -> bytes:
        if not (self.complete or self.too_large or self.disconnected):
            await self._wait_for_body()
        if self.too_large:
            raise body_too_large(self.gateway.limits.max_body_bytes)
        if not self.complete:
            raise client_gone()
        chunks = self.chunks
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _wait_for_body(self) -> None:
        """The slow path: a body still on its way (large, or dripped by a slow client)."""
        transport = self.protocol.transport
        if self.expect_100_continue and not transport.is_closing():
            transport.write(_CONTINUE)
        self._waiter = asyncio.get_running_loop().create_future()
        await within_body_deadline(self._waiter, self.gateway.settings.gateway_body_timeout_seconds)

    def respond(self, status: int, payload: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        """Writes the whole response at once, then lets uvicorn go on with the connection."""
        transport = self.protocol.transport
        if self.disconnected or transport.is_closing():
            return
        head = [STATUS_LINE[status]]
        for name, value in self.protocol.server_state.default_headers:  # date (and server, when on)
            head += (name, b": ", value, b"\r\n")
        head += (b"content-type: application/json\r\ncontent-length: ", b"%d" % len(payload), b"\r\n")
        for name, value in headers:
            head += (name, b": ", value, b"\r\n")
        if (b"connection", b"close") in headers:  # e.g. a 408: the rest of the body is not worth reading
            self.keep_alive = False
        elif not self.keep_alive:
            head.append(b"connection: close\r\n")
        head += (b"\r\n", payload)
        transport.write(b"".join(head))
        self.response_complete = True
        if not self.keep_alive:
            transport.close()
        self.protocol.on_response_complete()
