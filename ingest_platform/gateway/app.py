"""The gateway app: Starlette routing over small route modules, one `Gateway` state per worker.

Route modules: each module in ROUTE_MODULES exposes `routes(settings) -> list[BaseRoute]`. To add
endpoints, write a module with that function and add its name here; authenticate inside a route
with `await ingest_platform.gateway.auth.authorize(request, "<scope>")`, whose AuthError the app
renders as a JSON error body (401, 403, 429 or 503). Shared per-worker state (Redis client, authenticator, buffer
health) is `request.app.state.gateway` (a `state.Gateway`).
"""

from __future__ import annotations

import contextlib
import gc
import importlib

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from ingest_platform.gateway import logs
from ingest_platform.gateway.auth import AuthError
from ingest_platform.gateway.state import Gateway
from ingest_platform.settings import Settings, get_settings

ROUTE_MODULES = ("ingest", "websocket", "ops", "openapi", "features")


def error(status: int, code: str, message: str, headers: dict | None = None, **extra) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, **extra}}, status_code=status,
                        headers=headers)


def collect_routes(settings: Settings) -> list:
    routes = []
    for name in ROUTE_MODULES:
        routes += importlib.import_module(f"ingest_platform.gateway.{name}").routes(settings)
    return routes


async def _auth_error(request: Request, exc: AuthError) -> JSONResponse:
    return error(exc.status, exc.code, exc.message, exc.headers or None)


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    codes = {404: "not_found", 405: "method_not_allowed"}
    return error(exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail), exc.headers)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    logs.log.exception("unhandled error", extra={"path": request.url.path})
    return error(500, "internal", "internal error")


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or get_settings()
    logs.configure()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        gateway = Gateway(settings)
        app.state.gateway = gateway
        await gateway.start()
        # Everything loaded so far lives as long as the worker: keep it out of the cyclic GC's
        # full collections, which otherwise re-scan it (about 5% of a batch's CPU, measured).
        gc.freeze()
        logs.log.info("gateway worker started", extra={
            "strict": settings.gateway_strict, "feedback_events": settings.enable_feedback_events,
            "redis": "ok" if gateway.health.last_error is None else gateway.health.last_error})
        try:
            yield {"gateway": gateway}  # lifespan state: how the HTTP fast path (fastpath.py) finds it
        finally:
            await gateway.stop()

    return Starlette(
        routes=collect_routes(settings),
        lifespan=lifespan,
        exception_handlers={AuthError: _auth_error, HTTPException: _http_error, Exception: _unexpected},
    )


def app_from_env() -> Starlette:
    """Factory for `uvicorn --factory` (each worker process builds its own app)."""
    return create_app()
