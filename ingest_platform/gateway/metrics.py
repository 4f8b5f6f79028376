"""Prometheus metrics of the gateway.

With several worker processes (`--workers N`) the CLI points PROMETHEUS_MULTIPROC_DIR at a fresh
directory before the workers start, and /metrics aggregates every worker's values from there.
Labelled children are cached because `.labels()` costs more than the increment on the hot path.
"""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess

REQUESTS = Counter("gateway_requests_total", "Requests answered, by route and HTTP status.", ["route", "status"])
EVENTS = Counter("gateway_events_total", "Events accepted or rejected, by type and reason.",
                 ["event_type", "outcome", "reason"])
REDIS_WRITE = Histogram(
    "gateway_redis_write_seconds", "Latency of the admit-and-append round trip to Redis.",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0),
)
BACKLOG = Gauge("gateway_backlog_entries", "Undrained stream entries (entries added minus drained).",
                multiprocess_mode="livemax")
REDIS_UP = Gauge("gateway_redis_up", "1 when the last buffer poll reached Redis.", multiprocess_mode="livemin")
ACCEPTING = Gauge("gateway_accepting", "1 when the gateway accepts events (no backpressure).",
                  multiprocess_mode="livemin")
WS_CONNECTIONS = Gauge("gateway_websocket_connections", "Open WebSocket connections.",
                       multiprocess_mode="livesum")

_request_children: dict[tuple[str, int], Counter] = {}
_event_children: dict[tuple[str, str, str], Counter] = {}


def count_request(route: str, status: int) -> None:
    child = _request_children.get((route, status))
    if child is None:
        child = _request_children[(route, status)] = REQUESTS.labels(route, str(status))
    child.inc()


def count_events(event_type: str, outcome: str, reason: str, n: int = 1) -> None:
    key = (event_type, outcome, reason)
    child = _event_children.get(key)
    if child is None:
        child = _event_children[key] = EVENTS.labels(*key)
    child.inc(n)


def exposition() -> tuple[bytes, str]:
    """The metrics text of this worker, or of all workers in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
