"""Operations endpoints: liveness, readiness (Redis reachable and intake open), Prometheus metrics."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ingest_platform.gateway import metrics


async def healthz(request: Request) -> Response:
    """Liveness: the process serves requests."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Readiness: 200 while events are accepted; 503 with the reason while Redis is unreachable or
    backpressure is on (so a load balancer can steer traffic elsewhere)."""
    health = request.app.state.gateway.health
    state = health.state
    body = {
        "status": "ready" if health.accepting else "unavailable",
        "redis": "ok" if health.last_error is None else f"unreachable: {health.last_error}",
        "backlog": state.backlog if state else None,
        "backlog_high_water": health.backlog_high_water,
        "redis_used_memory": state.used_memory if state else None,
        "redis_maxmemory": state.maxmemory if state else None,
    }
    if not health.accepting:
        body["reason"] = health.refusal.code
        return JSONResponse(body, status_code=503, headers={"Retry-After": str(health.refusal.retry_after)})
    return JSONResponse(body)


async def prometheus(request: Request) -> Response:
    payload, content_type = metrics.exposition()
    return Response(payload, media_type=content_type)


def routes(settings) -> list:
    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", prometheus, methods=["GET"]),
    ]
