"""Online feature reads: GET /v1/features/users/{id} and /v1/features/tracks/{id}.

Values come from the Redis online store (processing/online.py), which every materialisation of
the feature views replaces. Needs an API key with the scope `features:read`.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ingest_platform.gateway.auth import authorize
from ingest_platform.processing.online import read_online_async

FEATURES_SCOPE = "features:read"
ENTITY_VIEWS = {"users": ("user", "user_features"), "tracks": ("track", "track_features")}


def _endpoint(entity: str, view: str):
    async def get_features(request: Request) -> Response:
        await authorize(request, FEATURES_SCOPE)
        return await _features_response(request, entity, view, request.path_params["entity_id"])

    get_features.__doc__ = f"The latest {view} of one {entity}, with their as-of time."
    return get_features


async def _features_response(request: Request, entity: str, view: str, entity_id: str) -> Response:
    values = await read_online_async(request.app.state.gateway.redis, view, entity_id)
    if values is None:
        return JSONResponse({"error": {"code": "not_found", "message": f"no online features for {entity} "
                             f"{entity_id!r} (unknown, or not materialised yet)"}}, status_code=404)
    return JSONResponse({
        "entity": entity, "id": entity_id, "feature_view": view, "features": values.features,
        "as_of": values.as_of, "feature_timestamp": values.feature_timestamp,
        "materialized_at": values.materialized_at,
    })


def routes(settings) -> list:
    return [Route(f"/v1/features/{path}/{{entity_id:str}}", _endpoint(entity, view), methods=["GET"])
            for path, (entity, view) in ENTITY_VIEWS.items()]
