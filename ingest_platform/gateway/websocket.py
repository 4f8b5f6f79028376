"""WebSocket /v1/events/ws: the same messages as POST /v1/events, each acknowledged after durability.

Protocol (JSON text frames; binary frames holding JSON are accepted too):
- Authenticate at connect with `Authorization: Bearer <key>` or, from a browser (which cannot set
  headers on a WebSocket), the query parameter `?api_key=<key>`. A missing or bad key: the
  connection is accepted and closed at once with code 1008 and the error code as reason. The key
  is re-checked (from a one-second cache) before each message, so revocation closes it too.
- Each client message is one event or {"events": [...]}. Messages are numbered 1, 2, 3, ... in
  the order received (`seq`). The server answers each with
  {"type": "ack", "seq", "accepted", "rejected", "results": [...]} once the accepted events are in
  Redis, or {"type": "error", "seq", "error": {...}} when the message as a whole is unreadable
  (nothing accepted). Acks come in order.
- Flow control instead of dropping: under backpressure, while Redis is unreachable, or when the
  key's rate limit is spent, the server sends {"type": "wait", "seq", "reason", "retry_after"},
  stops reading further messages (TCP pushes back on the client) and retries the held message
  itself; its ack follows when it is durable.
- Closes: 1001 after GATEWAY_WS_IDLE_SECONDS without a message, 1009 for a message over
  MAX_BODY_BYTES, 1008 for a missing, invalid, revoked or expired key.
"""

from __future__ import annotations

import asyncio
import math

import msgspec
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from ingest_platform.gateway import metrics
from ingest_platform.gateway.auth import AuthError, bearer_token
from ingest_platform.gateway.events import BodyError, results, split_body
from ingest_platform.gateway.logs import log
from ingest_platform.gateway.state import Gateway, RateLimited, Unavailable

ROUTE = "/v1/events/ws"
CLOSE_IDLE, CLOSE_POLICY, CLOSE_TOO_BIG, CLOSE_TRY_AGAIN = 1001, 1008, 1009, 1013
_encode = msgspec.json.Encoder().encode


def _close_code(exc: AuthError) -> int:
    """1013 (try again later) when Redis is unreachable or the address is blocked for guessing
    keys, 1008 (policy) for a bad key."""
    return CLOSE_TRY_AGAIN if exc.status in (429, 503) else CLOSE_POLICY


def _client(ws: WebSocket) -> str | None:
    return ws.client.host if ws.client else None


def _token(ws: WebSocket) -> str | None:
    return bearer_token(ws.headers.get("authorization")) or ws.query_params.get("api_key") or None


async def events_ws(ws: WebSocket) -> None:
    gateway: Gateway = ws.app.state.gateway
    await ws.accept()
    try:
        key = await gateway.auth.authenticate(_token(ws), _client(ws))
    except AuthError as exc:
        await ws.close(_close_code(exc), exc.code)
        return
    metrics.WS_CONNECTIONS.inc()
    try:
        await _serve(ws, gateway, key)
    except WebSocketDisconnect:
        pass
    finally:
        metrics.WS_CONNECTIONS.dec()


async def _serve(ws: WebSocket, gateway: Gateway, key) -> None:
    seq = 0
    while True:
        await _hold_while_refused(ws, gateway, seq + 1)
        try:
            message = await asyncio.wait_for(ws.receive(), gateway.settings.gateway_ws_idle_seconds)
        except asyncio.TimeoutError:
            await ws.close(CLOSE_IDLE, "idle timeout")
            return
        if message["type"] == "websocket.disconnect":
            return
        data = message.get("bytes") or (message.get("text") or "").encode()
        seq += 1
        if len(data) > gateway.limits.max_body_bytes:
            await ws.close(CLOSE_TOO_BIG, f"a message is at most {gateway.limits.max_body_bytes} bytes")
            return
        try:
            key = await gateway.auth.authenticate(_token(ws), _client(ws))  # revocation reaches open sockets too
        except AuthError as exc:
            await ws.close(_close_code(exc), exc.code)
            return
        reply = await _process(ws, gateway, key, seq, data)
        metrics.count_request(ROUTE, 200 if reply["type"] == "ack" else 400)
        await ws.send_text(_encode(reply).decode())


async def _hold_while_refused(ws: WebSocket, gateway: Gateway, next_seq: int) -> None:
    """Stop reading while intake is paused: the client's sends back up in TCP, nothing is dropped."""
    told = None
    while not gateway.health.accepting:
        refusal = gateway.health.refusal
        if refusal is not told:
            await _send_wait(ws, next_seq, refusal.code, refusal.retry_after)
            told = refusal
        await gateway.health.wait_for_change(refusal.retry_after)


async def _process(ws: WebSocket, gateway: Gateway, key, seq: int, data: bytes) -> dict:
    try:
        raws = split_body(data, gateway.limits)
    except BodyError as exc:
        return {"type": "error", "seq": seq,
                "error": {"code": exc.code, "message": exc.message, "status": exc.status}}
    told = None
    while True:
        try:
            outcome = await gateway.ingest(key, raws)
            break
        except Unavailable as exc:
            if exc.refusal is not told:
                await _send_wait(ws, seq, exc.refusal.code, exc.refusal.retry_after)
                told = exc.refusal
            await gateway.health.wait_for_change(exc.refusal.retry_after)
        except RateLimited as exc:
            if not math.isfinite(exc.retry_after):
                return {"type": "error", "seq": seq, "error": {
                    "code": "rate_limited", "status": 429,
                    "message": f"this message costs {exc.cost} events, more than the key's burst of {exc.limit.burst}"}}
            await _send_wait(ws, seq, "rate_limited", exc.retry_after)
            await asyncio.sleep(exc.retry_after)
    batch = outcome.batch
    return {"type": "ack", "seq": seq, "accepted": len(batch.order), "rejected": len(batch.rejected),
            "results": results(batch)}


async def _send_wait(ws: WebSocket, seq: int, reason: str, retry_after: float) -> None:
    log.info("websocket told to wait", extra={"reason": reason, "seq": seq})
    await ws.send_text(_encode({"type": "wait", "seq": seq, "reason": reason, "retry_after": retry_after}).decode())


def routes(settings) -> list:
    return [WebSocketRoute(ROUTE, events_ws, name="events_ws")]
