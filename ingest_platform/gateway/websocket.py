"""WebSocket /v1/events/ws: the same messages as POST /v1/events, each acknowledged after durability.

Protocol (JSON text frames; binary frames holding JSON are accepted too):
- Authenticate at connect with `Authorization: Bearer <key>` or, from a browser (which cannot set
  headers on a WebSocket), the query parameter `?api_key=<key>`. A missing or bad key: the
  connection is accepted and closed at once with code 1008 and the error code as reason; while
  Redis is unreachable and the key is not in the worker's cache, with 1013 (try again later). The
  key is re-checked (from a one-second cache) before each message: the first message that arrives
  more than a second after the key was revoked (or expired) is not written, and the socket is
  closed with 1008. An idle socket is not closed by a revocation until its next message arrives
  (or its idle timeout).
- Each client message is one event or {"events": [...]}. Messages are numbered 1, 2, 3, ... in
  the order received (`seq`). The server answers each with
  {"type": "ack", "seq", "accepted", "rejected", "results": [...]} once the accepted events are in
  Redis, or {"type": "error", "seq", "error": {...}} when the message as a whole is unreadable
  (nothing accepted). Acks come in order.
- Flow control instead of dropping: under backpressure, while Redis is unreachable, or when the
  key's rate limit is spent, the server sends {"type": "wait", "seq", "reason", "retry_after"},
  stops reading further messages (TCP pushes back on the client) and retries the held message
  itself; its ack follows when it is durable.
- A write that Redis did not answer in time (a frozen Redis, a connection lost mid-flight) may or
  may not have been stored. The server then sends {"type": "wait", "seq", "reason":
  "outcome_unknown", "retry_after", "results": [{"index", "status": "unknown", "event_id"}, ...]}
  and keeps retrying the message itself with those same event ids (the drain keeps one event per
  event_id, so the retries land once) until Redis answers; then the ack follows. A client that
  gives up on the socket first should resend that message with the listed ids.
- Closes: 1001 after GATEWAY_WS_IDLE_SECONDS without a message, 1009 for a message over
  MAX_BODY_BYTES, 1008 for a missing, invalid, revoked or expired key.
"""

from __future__ import annotations

import asyncio
import math

import msgspec
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from ingest_platform.gateway import metrics, rate_limit
from ingest_platform.gateway.auth import AuthError, bearer_token
from ingest_platform.gateway.events import BodyError, results, split_body
from ingest_platform.gateway.logs import log, scope_request_id
from ingest_platform.gateway.state import Gateway, OutcomeUnknown, RateLimited, Unavailable

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
        metrics.count_request(ROUTE, 200 if reply["type"] == "ack" else reply["error"]["status"])
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
    unknown: OutcomeUnknown | None = None  # set once a write of this message went unanswered
    while True:
        try:
            outcome = await (gateway.ingest(key, raws) if unknown is None else gateway.retry(unknown))
            break
        except Unavailable as exc:
            if exc.refusal is not told:
                await _send_wait(ws, seq, exc.refusal.code, exc.refusal.retry_after)
                told = exc.refusal
            await gateway.health.wait_for_change(exc.refusal.retry_after)
        except OutcomeUnknown as exc:
            # Never acked, never called unwritten: retried here with the same ids until Redis answers.
            if unknown is None:
                unknown = exc
                await _send_wait(ws, seq, "outcome_unknown", 1, results=exc.results())
            told = gateway.health.refusal  # the outage this write ran into: already told
            await gateway.health.wait_for_change(1)
        except RateLimited as exc:
            if not math.isfinite(exc.retry_after):
                code, message = rate_limit.over_burst(exc.limit, exc.cost)  # as POST /v1/events: 413
                return {"type": "error", "seq": seq, "error": {"code": code, "status": 413, "message": message}}
            await _send_wait(ws, seq, "rate_limited", exc.retry_after)
            await asyncio.sleep(exc.retry_after)
    batch = outcome.batch
    return {"type": "ack", "seq": seq, "accepted": len(batch.order), "rejected": len(batch.rejected),
            "results": results(batch)}


async def _send_wait(ws: WebSocket, seq: int, reason: str, retry_after: float, **extra) -> None:
    log.info("websocket told to wait",
             extra={"reason": reason, "seq": seq, "connection_id": scope_request_id(ws.scope)})
    await ws.send_text(_encode({"type": "wait", "seq": seq, "reason": reason, "retry_after": retry_after,
                                **extra}).decode())


def routes(settings) -> list:
    return [WebSocketRoute(ROUTE, events_ws, name="events_ws")]
