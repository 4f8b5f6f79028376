"""The HTTP gateway: a small Starlette app in front of the Redis Streams log."""

from __future__ import annotations

import contextlib
from datetime import datetime, timezone

import msgspec
import redis.exceptions
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ingest_platform.contract import STREAM_ENTRY_FIELD, stream_entry_encoder
from ingest_platform.gateway.auth import Authenticator, bearer_token
from ingest_platform.gateway.events import (
    BodyError,
    Limits,
    parse_events,
    split_body,
    stream_entries,
)
from ingest_platform.settings import Settings, get_settings
from ingest_platform.storage import event_log


def error(status: int, code: str, message: str, **extra) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, **extra}}, status_code=status)


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or get_settings()
    limits = Limits(settings.max_batch_events, settings.max_event_bytes)
    enabled = frozenset({"user_interaction"} | ({"feedback_event"} if settings.enable_feedback_events else set()))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        app.state.redis = event_log.connect_async(settings.effective_redis_url)
        app.state.auth = Authenticator(app.state.redis)
        yield
        await app.state.redis.aclose()

    async def post_events(request: Request) -> Response:
        key = await request.app.state.auth.authenticate(bearer_token(request.headers.get("authorization")))
        if key is None:
            return error(401, "unauthorized", "send a valid API key as 'Authorization: Bearer <key>'")
        body = await request.body()
        if len(body) > settings.max_body_bytes:
            return error(413, "body_too_large", f"a request body is at most {settings.max_body_bytes} bytes")
        try:
            raws = split_body(body, limits)
        except BodyError as exc:
            return error(exc.status, exc.code, exc.message)
        batch = parse_events(raws, frozenset(key.scopes), limits, enabled)
        if batch.order:
            received_at = datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")
            entries = [(stream, stream_entry_encoder.encode(entry))
                       for stream, entry in stream_entries(batch, received_at, key.key_id)]
            try:
                await event_log.append_entries(request.app.state.redis, entries, STREAM_ENTRY_FIELD)
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                return error(503, "buffer_unavailable", "the event buffer is unreachable; retry later",
                             retry_after=1)
        results = sorted(
            [{"index": i, "status": "accepted", "event_id": eid} for i, eid in batch.order]
            + [{"index": r.index, "status": "rejected", "code": r.code, "reason": r.message} for r in batch.rejected],
            key=lambda r: r["index"],
        )
        status = 202 if batch.order else (403 if all(r.code == "forbidden_event_type" for r in batch.rejected) else 422)
        body = {"accepted": len(batch.order), "rejected": len(batch.rejected), "results": results}
        return Response(msgspec.json.encode(body), status_code=status, media_type="application/json")

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        try:
            await request.app.state.redis.ping()
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            return JSONResponse({"status": "unavailable", "redis": str(exc)}, status_code=503)
        return JSONResponse({"status": "ready", "redis": "ok"})

    return Starlette(
        routes=[
            Route("/v1/events", post_events, methods=["POST"]),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
        ],
        lifespan=lifespan,
    )


def app_from_env() -> Starlette:
    """Factory for `uvicorn --factory` (each worker process builds its own app)."""
    return create_app()
