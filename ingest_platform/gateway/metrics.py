"""Prometheus metrics of the gateway.

With several worker processes (`--workers N`) the CLI points PROMETHEUS_MULTIPROC_DIR at a fresh
directory before the workers start, and /metrics aggregates every worker's values from there.

Per-request counts are tallied in plain dicts and written to the metrics once per event-loop turn
(`flush`), not per request: in multiprocess mode every increment takes a lock, a getpid() syscall
and an mmap write (about 4 us for the three metrics of a request, 5% of a single-event request's
CPU). Under load one flush covers every request of a turn; /metrics flushes its own worker first,
so counts lag by at most one loop turn of the other workers.
"""

from __future__ import annotations

import asyncio
import bisect
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

# Not yet flushed: counts per label set, and Redis write latencies as counts per histogram bucket.
_requests: dict[tuple[str, int], int] = {}
_events: dict[tuple[str, str, str], int] = {}
_WRITE_BOUNDS = REDIS_WRITE._upper_bounds  # the buckets above, +Inf last
_write_counts = [0] * len(_WRITE_BOUNDS)
_write_seconds = 0.0
_flush_scheduled = False


def count_request(route: str, status: int) -> None:
    key = (route, status)
    _requests[key] = _requests.get(key, 0) + 1
    if not _flush_scheduled:
        _schedule_flush()


def count_events(event_type: str, outcome: str, reason: str, n: int = 1) -> None:
    key = (event_type, outcome, reason)
    _events[key] = _events.get(key, 0) + n
    if not _flush_scheduled:
        _schedule_flush()


def observe_redis_write(seconds: float) -> None:
    global _write_seconds
    _write_counts[bisect.bisect_left(_WRITE_BOUNDS, seconds)] += 1  # the bucket observe() would pick
    _write_seconds += seconds
    if not _flush_scheduled:
        _schedule_flush()


def _schedule_flush() -> None:
    global _flush_scheduled
    try:
        asyncio.get_running_loop().call_soon(flush)
    except RuntimeError:  # no event loop (a script or a test): write at once
        flush()
        return
    _flush_scheduled = True


def flush() -> None:
    """Writes the tallies to the metrics."""
    global _flush_scheduled, _write_seconds
    _flush_scheduled = False
    for (route, status), n in _requests.items():
        child = _request_children.get((route, status))
        if child is None:
            child = _request_children[(route, status)] = REQUESTS.labels(route, str(status))
        child.inc(n)
    _requests.clear()
    for key, n in _events.items():
        child = _event_children.get(key)
        if child is None:
            child = _event_children[key] = EVENTS.labels(*key)
        child.inc(n)
    _events.clear()
    if any(_write_counts):
        # Histogram has no public way to add many observations at once: add them bucket by bucket
        # as observe() does (prometheus-client is pinned to the minor version this was written for).
        REDIS_WRITE._sum.inc(_write_seconds)
        for bucket, n in zip(REDIS_WRITE._buckets, _write_counts):
            if n:
                bucket.inc(n)
        _write_counts[:] = [0] * len(_write_counts)
        _write_seconds = 0.0


def exposition() -> tuple[bytes, str]:
    """The metrics text of this worker, or of all workers in multiprocess mode."""
    flush()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
