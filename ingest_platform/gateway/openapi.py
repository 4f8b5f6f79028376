"""OpenAPI 3.1 description at /openapi.json and a self-contained docs page at /docs.

The event schemas come from the contract's msgspec structs (`msgspec.json.schema_components`), so
the docs cannot drift from what the gateway parses. The docs page loads nothing from the internet:
a few lines of inline JavaScript render /openapi.json.
"""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from ingest_platform.contract import EVENT_TYPES, Action, FeedbackType
from ingest_platform.settings import Settings

REF = "#/components/schemas/{name}"


class EventAccepted(msgspec.Struct, tag_field="status", tag="accepted"):
    index: int
    event_id: str


class EventRejected(msgspec.Struct, tag_field="status", tag="rejected"):
    index: int
    code: str
    reason: str


class IngestResponse(msgspec.Struct):
    accepted: int
    rejected: int
    results: list[EventAccepted | EventRejected]


class ErrorDetail(msgspec.Struct):
    code: str
    message: str
    retry_after: float | None = None


class ErrorResponse(msgspec.Struct):
    error: ErrorDetail


def _schemas(settings: Settings) -> dict:
    payloads = [t.payload for t in EVENT_TYPES.values()]
    _, components = msgspec.json.schema_components([*payloads, IngestResponse, ErrorResponse], ref_template=REF)
    hints = {"action": [a.value for a in Action], "feedback_type": [t.value for t in FeedbackType]}
    for payload in payloads:
        props = components[payload.__name__]["properties"]
        for name, values in hints.items():
            if name in props:
                props[name]["description"] = (
                    f"One of {values}. Other values are accepted and become dead letters downstream "
                    "(rejected with 422 when GATEWAY_STRICT=true).")
        props["timestamp"].update(format="date-time", description="ISO 8601; normalised to UTC "
                                  "(an instant without offset is taken as UTC).")
        props["event_id"]["description"] = "Optional idempotency key; the gateway stamps a UUIDv7 when absent."
    wrappers = {}
    for name, event_type in EVENT_TYPES.items():
        wrapper = f"{event_type.payload.__name__}Event"
        wrappers[wrapper] = {
            "type": "object", "additionalProperties": False, "required": [name],
            "properties": {name: {"$ref": REF.format(name=event_type.payload.__name__)}},
            "description": f"One {name}: an object whose only key is its type.",
        }
    any_event = {"oneOf": [{"$ref": REF.format(name=n)} for n in wrappers]}
    components |= wrappers
    components["Event"] = any_event
    components["Batch"] = {
        "type": "object", "additionalProperties": False, "required": ["events"],
        "properties": {"events": {"type": "array", "items": {"$ref": REF.format(name="Event")},
                                  "minItems": 1, "maxItems": settings.max_batch_events}},
    }
    return components


def _error(description: str) -> dict:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": REF.format(name="ErrorResponse")}}}}


def build_spec(settings: Settings) -> dict:
    ingest = {"content": {"application/json": {"schema": {"$ref": REF.format(name="IngestResponse")}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "ingest-platform gateway", "version": "1",
                 "description": "Listening interactions and recommendation feedback. Limits: "
                 f"{settings.max_batch_events} events and {settings.max_body_bytes} bytes per request, "
                 f"{settings.max_event_bytes} bytes per event. See docs/gateway.md."},
        "components": {
            "schemas": _schemas(settings),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "An API key from `ingest-platform keys create`."}},
        },
        "security": [{"bearer": []}],
        "paths": {
            "/v1/events": {"post": {
                "summary": "Send one event or a batch",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "oneOf": [{"$ref": REF.format(name="Event")}, {"$ref": REF.format(name="Batch")}]}}}},
                "responses": {
                    "202": {"description": "At least one event accepted (durably buffered); per-event results.", **ingest},
                    "400": _error("Unreadable body: malformed JSON, invalid UTF-8, not an object, bad batch."),
                    "401": _error("Missing, invalid, revoked or expired API key."),
                    "403": {"description": "Every event is of a type the key may not send.", **ingest},
                    "413": _error("Body, batch or event over its limit."),
                    "422": {"description": "No event acceptable; per-event reasons.", **ingest},
                    "429": _error("Rate limit spent; see Retry-After and RateLimit-* headers."),
                    "503": _error("Buffer unreachable, backlog or memory over its mark; see Retry-After."),
                },
            }},
            "/v1/events/ws": {"get": {
                "summary": "WebSocket: the same messages, each acknowledged after durability",
                "description": "Authenticate with the Authorization header or ?api_key=. See docs/gateway.md.",
                "responses": {"101": {"description": "Switching protocols"}},
            }},
            "/healthz": {"get": {"summary": "Liveness", "security": [], "responses": {"200": {"description": "ok"}}}},
            "/readyz": {"get": {"summary": "Readiness (Redis reachable, intake open)", "security": [],
                                "responses": {"200": {"description": "ready"}, "503": {"description": "not ready"}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "security": [],
                                 "responses": {"200": {"description": "text exposition format"}}}},
        },
    }


DOCS_HTML = """<!doctype html>
<html><head><meta charset="utf-8"><title>ingest-platform gateway API</title>
<style>body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}
pre{background:#f4f4f4;padding:.6rem;overflow:auto}h2{border-bottom:1px solid #ccc}code{color:#a33}</style>
</head><body><h1>ingest-platform gateway API</h1>
<p>Machine-readable: <a href="/openapi.json">/openapi.json</a> (OpenAPI 3.1).</p><div id="doc">loading...</div>
<script>
fetch('/openapi.json').then(r => r.json()).then(spec => {
  const esc = s => String(s).replace(/[&<>]/g, c => ({'&':'&amp;','<':'&lt;','>':'&gt;'}[c]));
  let h = '<p>' + esc(spec.info.description) + '</p><h2>Endpoints</h2>';
  for (const [path, ops] of Object.entries(spec.paths)) for (const [m, op] of Object.entries(ops)) {
    h += '<h3><code>' + m.toUpperCase() + ' ' + esc(path) + '</code></h3><p>' + esc(op.summary || '') +
         (op.description ? '<br>' + esc(op.description) : '') + '</p><ul>';
    for (const [code, r] of Object.entries(op.responses || {})) h += '<li><b>' + code + '</b> ' + esc(r.description) + '</li>';
    h += '</ul>';
  }
  h += '<h2>Schemas</h2>';
  for (const [name, s] of Object.entries(spec.components.schemas))
    h += '<h3 id="' + esc(name) + '">' + esc(name) + '</h3><pre>' + esc(JSON.stringify(s, null, 2)) + '</pre>';
  document.getElementById('doc').innerHTML = h;
});
</script></body></html>
"""


def routes(settings: Settings) -> list:
    spec = msgspec.json.encode(build_spec(settings))

    async def openapi_json(request: Request) -> Response:
        return Response(spec, media_type="application/json")

    async def docs(request: Request) -> Response:
        return HTMLResponse(DOCS_HTML)

    return [Route("/openapi.json", openapi_json, methods=["GET"]), Route("/docs", docs, methods=["GET"])]
