"""The gateway app: Starlette routing over small route modules, one `Gateway` state per worker.

Route modules: each module in ROUTE_MODULES exposes `routes(settings) -> list[BaseRoute]`. To add
endpoints, write a module with that function and add its name here; authenticate inside a route
with `await ingest_platform.gateway.auth.authorize(request, "<scope>")`, whose AuthError the app
renders as a JSON error body (401, 403, 429 or 503). Shared per-worker state (Redis client, authenticator, buffer
health) is `request.app.state.gateway` (a `state.Gateway`).

`RequestIds` wraps the whole app: every answer of these routes carries X-Request-ID, and WebSocket
connections get one too (on the 101 response and in their log lines). POST /v1/events normally
never reaches this app (the HTTP fast path answers it, `fastpath.py`) and sets its own id there.
"""

from __future__ import annotations

import contextlib
import gc
import importlib

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ingest_platform.gateway import logs, metrics
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
    logs.log.exception("unhandled error", extra={"path": request.url.path,
                                                 "request_id": logs.scope_request_id(request.scope)})
    return error(500, "internal", "internal error")


_ID_HEADER = b"x-request-id"
_UNMATCHED = "unmatched"  # the route label of a request no route matched (no client paths as labels)
_MAX_LOGGED_PATH = 200


class RequestIds:
    """Pure ASGI middleware (BaseHTTPMiddleware would add a task and queues per request): gives each
    HTTP request and WebSocket connection an id (the client's X-Request-ID when sane, else a new
    one), kept in `scope["state"]["request_id"]` for log lines and sent back as X-Request-ID.

    With the access log on, one line per HTTP request (method, path without query string, status)
    and per WebSocket connection. An endpoint whose answer already carries X-Request-ID (the ASGI
    form of POST /v1/events) logs and counts itself and is left alone.
    """

    def __init__(self, app: ASGIApp, access_log: bool):
        self.app, self.access_log = app, access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":  # lifespan
            await self.app(scope, receive, send)
            return
        rid = logs.request_id(_header(scope, _ID_HEADER))
        scope.setdefault("state", {})["request_id"] = rid
        id_header = (_ID_HEADER, rid.encode())
        outcome: dict = {}  # what the app answered: status, whether it set its own id, close code

        async def send_with_id(message: Message) -> None:
            kind = message["type"]
            if kind == "http.response.start" or kind == "websocket.accept":
                headers = list(message.get("headers") or ())
                outcome["status"] = message.get("status", 101)
                if any(name.lower() == _ID_HEADER for name, _ in headers):
                    outcome["own_id"] = True
                else:
                    message = {**message, "headers": [*headers, id_header]}
            elif kind == "websocket.close":
                outcome["close_code"] = message.get("code", 1000)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if not outcome.get("own_id"):
                self._record(scope, rid, outcome)

    def _record(self, scope: Scope, rid: str, outcome: dict) -> None:
        if scope["type"] == "http":
            status = outcome.get("status", 500)  # no answer at all: the app failed
            route = scope.get("route")
            metrics.count_request(getattr(route, "path", _UNMATCHED), status)
            if self.access_log:
                logs.log.info(f"{scope['method']} {scope['path'][:_MAX_LOGGED_PATH]}",
                              extra={"request_id": rid, "status": status})
        elif self.access_log:
            logs.log.info(f"WebSocket {scope['path'][:_MAX_LOGGED_PATH]} closed",
                          extra={"connection_id": rid, "status": outcome.get("status"),
                                 "close_code": outcome.get("close_code")})


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:  # ASGI servers send header names lowercased
            return value
    return None


def create_app(settings: Settings | None = None) -> ASGIApp:
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

    app = Starlette(
        routes=collect_routes(settings),
        lifespan=lifespan,
        exception_handlers={AuthError: _auth_error, HTTPException: _http_error, Exception: _unexpected},
    )
    # Outermost, so that even the 500 answers of Starlette's ServerErrorMiddleware carry the id.
    return RequestIds(app, settings.gateway_access_log)


def app_from_env() -> ASGIApp:
    """Factory for `uvicorn --factory` (each worker process builds its own app)."""
    return create_app()
