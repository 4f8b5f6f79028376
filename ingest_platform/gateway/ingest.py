"""POST /v1/events: one event or {"events": [...]}, answered with a result per event.

`answer` is the whole request, independent of how the bytes arrive: the gateway's own HTTP
protocol (`fastpath`, the hot path) calls it straight from the socket, and `EventsEndpoint` is the
same thing as a raw ASGI app for any other server (and for the Starlette route table).

Statuses: 202 when at least one event was accepted; 400 (unreadable body), 408 (body too slow),
413 (too large, or more events than the key's burst), 422 (no event acceptable), 403 (every
event outside the key's scopes), 401 (key), 429 (rate limit), 503 (buffer unavailable or full:
nothing written; or `outcome_unknown`: the write was sent but Redis did not answer, see
`_outcome_unknown`). Error bodies are {"error": {"code", "message", ...}}.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from typing import TypeVar

import msgspec
from starlette.routing import Route

from ingest_platform.gateway import metrics, rate_limit
from ingest_platform.gateway.auth import AuthError, bearer_token
from ingest_platform.gateway.events import BodyError, encode_results, split_body
from ingest_platform.gateway.logs import log, request_id
from ingest_platform.gateway.state import Gateway, OutcomeUnknown, RateLimited, Unavailable

ROUTE = "/v1/events"
_encode = msgspec.json.Encoder().encode
_JSON = (b"content-type", b"application/json")

Headers = list[tuple[bytes, bytes]]
T = TypeVar("T")
BodyReader = Callable[[], Awaitable[bytes]]  # the whole body; raises Reply (400, 408, 413) itself


class Reply(Exception):
    """An early answer: status, error body, extra headers."""

    def __init__(self, status: int, code: str, message: str, headers: Headers | None = None, **extra):
        self.status, self.headers = status, headers or []
        self.body = {"error": {"code": code, "message": message, **extra}}


def body_too_large(max_bytes: int) -> Reply:
    return Reply(413, "body_too_large", f"a request body is at most {max_bytes} bytes")


async def within_body_deadline(arrival: Awaitable[T], timeout: float) -> T:
    """Awaits the body's `arrival`, or answers 408 after `timeout` s: a body dripped byte by byte
    must not hold a worker slot."""
    try:
        async with asyncio.timeout(timeout):
            return await arrival
    except TimeoutError:
        raise Reply(408, "body_timeout", f"the request body must arrive within {timeout:g} s",
                    [(b"connection", b"close")]) from None


def client_gone() -> Reply:
    return Reply(400, "client_disconnected", "the client went away before the body arrived")


async def answer(gateway: Gateway, headers: dict[bytes, bytes], client: str | None,
                 read_body: BodyReader) -> tuple[int, bytes, Headers]:
    """(status, JSON payload, headers) for one request; never raises."""
    rid = request_id(headers.get(b"x-request-id"))
    try:
        status, payload, extra = await _handle(gateway, headers, client, read_body)
    except Reply as reply:
        status, payload, extra = reply.status, _encode(reply.body), reply.headers
    except Exception:  # a bug must still get a JSON answer and a log line, never a dropped connection
        log.exception("unhandled error in POST /v1/events", extra={"request_id": rid})
        status, payload, extra = 500, _encode({"error": {"code": "internal", "message": "internal error"}}), []
    if status == 500 or gateway.settings.gateway_access_log:  # 503s: the flip itself is logged
        log.log(30 if status >= 500 else 20, "POST /v1/events", extra={"request_id": rid, "status": status})
    metrics.count_request(ROUTE, status)
    extra.append((b"x-request-id", rid.encode()))
    return status, payload, extra


async def _handle(gateway: Gateway, headers: dict[bytes, bytes], client: str | None,
                  read_body: BodyReader) -> tuple[int, bytes, Headers]:
    try:
        key = await gateway.auth.authenticate(bearer_token(headers.get(b"authorization")), client)
    except AuthError as exc:
        raise Reply(exc.status, exc.code, exc.message,
                    [(name.lower().encode(), value.encode()) for name, value in exc.headers.items()])
    try:
        gateway.check_accepting()
    except Unavailable as exc:
        raise _unavailable(exc)
    declared = headers.get(b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > gateway.limits.max_body_bytes:
        raise body_too_large(gateway.limits.max_body_bytes)
    try:
        raws = split_body(await read_body(), gateway.limits)
    except BodyError as exc:
        raise Reply(exc.status, exc.code, exc.message)
    try:
        outcome = await gateway.ingest(key, raws)
    except Unavailable as exc:
        raise _unavailable(exc)
    except OutcomeUnknown as exc:
        exc.count()
        raise _outcome_unknown(exc)
    except RateLimited as exc:
        if not math.isfinite(exc.retry_after):  # costs more than the burst: waiting cannot help
            code, message = rate_limit.over_burst(exc.limit, exc.cost)
            raise Reply(413, code, message, rate_limit.headers(exc.limit, exc.admission, retry_after=False),
                        max_events=exc.limit.burst)
        raise Reply(429, "rate_limited", str(exc), rate_limit.headers(exc.limit, exc.admission),
                    retry_after=exc.retry_after)
    status, payload = encode_results(outcome.batch)
    return status, payload, rate_limit.headers(outcome.limit, outcome.admission)


def _unavailable(exc: Unavailable) -> Reply:
    r = exc.refusal
    return Reply(503, r.code, r.message, [(b"retry-after", str(r.retry_after).encode())], retry_after=r.retry_after)


# Why 503 and not 504: 503 is the one 5xx the gateway answers, always with an error code and
# Retry-After, so a client that looks only at the status retries as for any 503, and the distinct
# code tells it how (with the listed ids). 504 is what the TLS-terminating proxy in front answers
# when the gateway itself is slow, without a body of ours: a client could not tell that answer
# (ids unknown) from this one (ids listed).
OUTCOME_UNKNOWN_RETRY_AFTER = 1


def _outcome_unknown(exc: OutcomeUnknown) -> Reply:
    """503 `outcome_unknown`: the write was sent and not answered, so its events may be stored (or be
    stored when Redis wakes). Unlike other 503s it does not say "nothing was written": it lists the
    event id each event was sent with, to be sent again with exactly those ids, which lands each
    event once whatever happened to the first attempt (the drain keeps one event per event_id)."""
    return Reply(503, "outcome_unknown",
                 "the event buffer (Redis) did not answer in time: these events may or may not have been "
                 "stored; retry with the same event ids (set each event's event_id to the one in results), "
                 "which stores each event exactly once",
                 [(b"retry-after", str(OUTCOME_UNKNOWN_RETRY_AFTER).encode())],
                 retry_after=OUTCOME_UNKNOWN_RETRY_AFTER, results=exc.results())


class EventsEndpoint:
    """POST /v1/events as a raw ASGI app (no Request/Response objects: they cost as much as the work)."""

    async def __call__(self, scope, receive, send) -> None:
        gateway: Gateway = scope["app"].state.gateway
        limit, timeout = gateway.limits.max_body_bytes, gateway.settings.gateway_body_timeout_seconds

        async def read_body() -> bytes:
            return await within_body_deadline(_receive_body(receive, limit), timeout)

        client = scope["client"][0] if scope.get("client") else None
        status, payload, extra = await answer(gateway, dict(scope["headers"]), client, read_body)
        await send({"type": "http.response.start", "status": status,
                    "headers": [_JSON, (b"content-length", str(len(payload)).encode()), *extra]})
        await send({"type": "http.response.body", "body": payload})


async def _receive_body(receive, max_bytes: int) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise client_gone()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            raise body_too_large(max_bytes)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def routes(settings) -> list:
    return [Route(ROUTE, EventsEndpoint(), methods=["POST"], name="post_events")]
