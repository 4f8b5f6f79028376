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


class EventUnknown(msgspec.Struct, tag_field="status", tag="unknown"):
    """An event of a 503 `outcome_unknown`: sent, not answered; retry it with this event_id."""

    index: int
    event_id: str


class ErrorDetail(msgspec.Struct):
    code: str
    message: str
    retry_after: float | None = None
    # 413 `batch_exceeds_burst`: the key's burst, the most events a request of this key can carry.
    max_events: int | msgspec.UnsetType = msgspec.UNSET  # UNSET: absent from other errors (never null)
    # 503 `outcome_unknown`: per event in request order, the id it was sent with or its rejection.
    results: list[EventUnknown | EventRejected] | msgspec.UnsetType = msgspec.UNSET


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


# Response headers, described once and inlined where they apply (OpenAPI forbids `required`
# beside a `$ref`, so they are not components).
HEADERS = {
    "X-Request-ID": {
        "description": "The client's X-Request-ID when it sent a sane one (printable ASCII, at most 64 "
                       "characters), else one the gateway made; the same id is in the gateway's log lines.",
        "schema": {"type": "string"}},
    "Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer", "minimum": 1}},
    "RateLimit": {
        "description": 'Current service limit (draft-ietf-httpapi-ratelimit-headers-11), e.g. '
                       '`"events";r=39999;t=1`: r = events left in the key\'s bucket, t = seconds until it '
                       "is full (on 429: until the refused request's cost is available, as Retry-After).",
        "schema": {"type": "string"}},
    "RateLimit-Policy": {
        "description": 'The key\'s quota policy (same draft), e.g. `"events";q=40000;w=2`: a burst of q '
                       "events, refilled in w seconds. Quota unit: events (a request costs its number of events).",
        "schema": {"type": "string"}},
    "RateLimit-Limit": {"description": "Earlier drafts' field: the key's burst (events).",
                        "schema": {"type": "integer"}},
    "RateLimit-Remaining": {"description": "Earlier drafts' field: events left in the key's bucket.",
                            "schema": {"type": "integer"}},
    "RateLimit-Reset": {"description": "Earlier drafts' field: seconds until the key's bucket is full.",
                        "schema": {"type": "integer"}},
    "WWW-Authenticate": {"description": "`Bearer`.", "schema": {"type": "string"}},
}
RATE_LIMIT_HEADERS = ("RateLimit", "RateLimit-Policy", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset")


def _headers(*names: str, required: tuple[str, ...] = ()) -> dict:
    """HEADERS by name; a name in `required` is on every such answer."""
    return {name: HEADERS[name] | ({"required": True} if name in required else {}) for name in names}


def _response(description: str, schema: str, *headers: str, required: tuple[str, ...] = ("X-Request-ID",)) -> dict:
    return {"description": description,
            "headers": _headers("X-Request-ID", *headers, required=required),
            "content": {"application/json": {"schema": {"$ref": REF.format(name=schema)}}}}


def _error(description: str, *headers: str, required: tuple[str, ...] = ("X-Request-ID",)) -> dict:
    return _response(description, "ErrorResponse", *headers, required=required)


def _connection_refusals() -> dict:
    """Answers of the HTTP layer before any route runs, for every path (no X-Request-ID: no route
    has seen the request); the connection is closed after them."""
    bare = {"content": {"application/json": {"schema": {"$ref": REF.format(name="ErrorResponse")}}}}
    return {
        "408": {"description": "`header_timeout`: the request head did not arrive within "
                               "GATEWAY_HEADER_TIMEOUT_SECONDS (on POST /v1/events also `body_timeout`: "
                               "the body did not arrive within GATEWAY_BODY_TIMEOUT_SECONDS).", **bare},
        "431": {"description": "`headers_too_large`: the request head is over GATEWAY_MAX_HEADER_BYTES.", **bare},
    }


def _plain(description: str) -> dict:
    return {"description": description, "headers": _headers("X-Request-ID", required=("X-Request-ID",))}


def build_spec(settings: Settings) -> dict:
    limited = RATE_LIMIT_HEADERS
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
                    "202": _response("At least one event accepted (durably buffered); per-event results.",
                                     "IngestResponse", *limited, required=("X-Request-ID", *limited)),
                    "400": _error("Unreadable body: malformed JSON, invalid UTF-8, not an object, bad batch; "
                                  "or not HTTP at all (`malformed_http`, connection closed)."),
                    "401": _error("Missing, invalid, revoked or expired API key.", "WWW-Authenticate"),
                    "403": _response("Every event is of a type the key may not send.", "IngestResponse",
                                     *limited, required=("X-Request-ID", *limited)),
                    **_connection_refusals(),
                    "413": _error("Body, batch or event over its limit; or `batch_exceeds_burst`: more events "
                                  "than the key's rate-limit burst, which can never be admitted (no Retry-After; "
                                  "split the batch into requests of at most `max_events` events).", *limited),
                    "422": _response("No event acceptable; per-event reasons.", "IngestResponse",
                                     *limited, required=("X-Request-ID", *limited)),
                    "429": _error("`rate_limited`: the key's bucket lacks this request's events (with the RateLimit "
                                  "headers); or `too_many_auth_failures` from this address. Retry after Retry-After.",
                                  "Retry-After", *limited, required=("X-Request-ID", "Retry-After")),
                    "503": _error("`buffer_unavailable`, `backlog_full`, `buffer_memory_full`: buffer unreachable, "
                                  "backlog or memory over its mark; nothing was written. Or `outcome_unknown`: the "
                                  "write was sent but Redis did not answer in time, so the events may or may not "
                                  "have been stored; `results` lists each sent event's `event_id` (and the "
                                  "rejections): retry those events with exactly those ids, which stores each once. "
                                  "Retry after Retry-After.", "Retry-After", required=("X-Request-ID", "Retry-After")),
                },
            }},
            "/v1/events/ws": {"get": {
                "summary": "WebSocket: the same messages, each acknowledged after durability",
                "description": "Authenticate with the Authorization header or ?api_key=. The 101 response "
                               "carries X-Request-ID, the connection's id in the gateway's logs. A request that "
                               "is not a valid WebSocket handshake gets a JSON error body (400 "
                               "`invalid_websocket_handshake`). "
                               "See docs/gateway.md.",
                "responses": {"101": {"description": "Switching protocols", "headers": _headers("X-Request-ID")},
                              "400": {"description": "Not a valid WebSocket handshake.",
                                      "content": {"application/json": {"schema": {
                                          "$ref": REF.format(name="ErrorResponse")}}}}},
            }},
            "/healthz": {"get": {"summary": "Liveness", "security": [],
                                 "responses": {"200": _plain("ok"), **_connection_refusals()}}},
            "/readyz": {"get": {"summary": "Readiness (Redis reachable, intake open)", "security": [],
                                "responses": {"200": _plain("ready"),
                                              "503": {"description": "not ready; the reason in the body",
                                                      "headers": _headers("X-Request-ID", "Retry-After",
                                                                          required=("X-Request-ID", "Retry-After"))},
                                              **_connection_refusals()}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "security": [],
                                 "responses": {"200": _plain("text exposition format"), **_connection_refusals()}}},
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
