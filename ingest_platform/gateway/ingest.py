"""POST /v1/events: one event or {"events": [...]}, answered with a result per event.

A raw ASGI endpoint rather than a Starlette Request/Response handler: this is the hot path, and
the request/response objects cost about as much as the rest of the work for a single event.

Statuses: 202 when at least one event was accepted; 400 (unreadable body), 413 (too large),
422 (no event acceptable), 403 (every event outside the key's scopes), 401 (key), 429 (rate
limit), 503 (buffer unavailable or full). Error bodies are {"error": {"code", "message", ...}}.
"""

from __future__ import annotations

import asyncio
import math

import msgspec
from starlette.routing import Route

from ingest_platform.gateway import metrics, rate_limit
from ingest_platform.gateway.auth import AuthError, bearer_token
from ingest_platform.gateway.events import BodyError, results, rejected_status, split_body
from ingest_platform.gateway.logs import log, request_id
from ingest_platform.gateway.state import Gateway, RateLimited, Unavailable

ROUTE = "/v1/events"
_encode = msgspec.json.Encoder().encode
_JSON = (b"content-type", b"application/json")


class _Reply(Exception):
    """An early answer: status, error body, extra headers."""

    def __init__(self, status: int, code: str, message: str, headers: list | None = None, **extra):
        self.status, self.headers = status, headers or []
        self.body = {"error": {"code": code, "message": message, **extra}}


class EventsEndpoint:
    """The ASGI app behind POST /v1/events."""

    async def __call__(self, scope, receive, send) -> None:
        gateway: Gateway = scope["app"].state.gateway
        headers = dict(scope["headers"])
        rid = request_id(headers.get(b"x-request-id"))
        try:
            status, body, extra = await self._handle(gateway, scope, headers, receive)
        except _Reply as reply:
            status, body, extra = reply.status, reply.body, reply.headers
        except Exception:  # a bug must still get a JSON answer and a log line, never a dropped connection
            log.exception("unhandled error in POST /v1/events", extra={"request_id": rid})
            status, body, extra = 500, {"error": {"code": "internal", "message": "internal error"}}, []
        if status == 500 or gateway.settings.gateway_access_log:  # 503s: the flip itself is logged
            log.log(30 if status >= 500 else 20, "POST /v1/events",
                    extra={"request_id": rid, "status": status})
        metrics.count_request(ROUTE, status)
        payload = _encode(body)
        await send({"type": "http.response.start", "status": status,
                    "headers": [_JSON, (b"content-length", str(len(payload)).encode()),
                                (b"x-request-id", rid.encode()), *extra]})
        await send({"type": "http.response.body", "body": payload})

    async def _handle(self, gateway: Gateway, scope: dict, headers: dict, receive) -> tuple[int, dict, list]:
        try:
            client = scope["client"][0] if scope.get("client") else None
            key = await gateway.auth.authenticate(bearer_token(headers.get(b"authorization")), client)
        except AuthError as exc:
            headers = [(name.lower().encode(), value.encode()) for name, value in exc.headers.items()]
            raise _Reply(exc.status, exc.code, exc.message, headers)
        try:
            gateway.check_accepting()
        except Unavailable as exc:
            raise _unavailable(exc)
        body = await _read_body(receive, headers, gateway.limits.max_body_bytes,
                                gateway.settings.gateway_body_timeout_seconds)
        try:
            raws = split_body(body, gateway.limits)
        except BodyError as exc:
            raise _Reply(exc.status, exc.code, exc.message)
        try:
            outcome = await gateway.ingest(key, raws)
        except Unavailable as exc:
            raise _unavailable(exc)
        except RateLimited as exc:
            retry = exc.retry_after
            message = str(exc) if math.isfinite(retry) else (
                f"this request costs {exc.cost} events, more than the key's burst of {exc.limit.burst}")
            raise _Reply(429, "rate_limited", message, rate_limit.headers(exc.limit, exc.admission),
                         retry_after=retry if math.isfinite(retry) else None)
        batch = outcome.batch
        body = {"accepted": len(batch.order), "rejected": len(batch.rejected), "results": results(batch)}
        status = 202 if batch.order else rejected_status(batch)
        return status, body, rate_limit.headers(outcome.limit, outcome.admission)


def _unavailable(exc: Unavailable) -> _Reply:
    r = exc.refusal
    return _Reply(503, r.code, r.message, [(b"retry-after", str(r.retry_after).encode())],
                  retry_after=r.retry_after)


async def _read_body(receive, headers: dict, max_bytes: int, timeout: float) -> bytes:
    declared = headers.get(b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise _Reply(413, "body_too_large", f"a request body is at most {max_bytes} bytes")
    try:
        async with asyncio.timeout(timeout):  # a body dripped byte by byte must not hold a worker slot
            return await _receive_body(receive, max_bytes)
    except TimeoutError:
        raise _Reply(408, "body_timeout", f"the request body must arrive within {timeout:g} s",
                     [(b"connection", b"close")]) from None


async def _receive_body(receive, max_bytes: int) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Reply(400, "client_disconnected", "the client went away before the body arrived")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            raise _Reply(413, "body_too_large", f"a request body is at most {max_bytes} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def routes(settings) -> list:
    return [Route(ROUTE, EventsEndpoint(), methods=["POST"], name="post_events")]
