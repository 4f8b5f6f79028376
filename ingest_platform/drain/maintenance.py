"""Lake and stream upkeep: compaction, trimming, dedup-state expiry, retired-file collection.

Compaction and replay both rewrite closed hours, so they take one Redis lock (`lake_maintenance`)
and never run at the same time; the drain itself needs no lock (its ranges are fenced by the
cursor CAS, and it writes only hours that are not closed yet or not compactable yet).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import redis

from ingest_platform.contract import EVENT_TYPES
from ingest_platform.drain import dedup
from ingest_platform.drain.compaction import Compacted, compact_closed_hours
from ingest_platform.drain.trimming import Trimmed, trim_streams
from ingest_platform.storage.event_log import DrainLog, entry_ms
from ingest_platform.storage.lake import collect_retired_pins

LOCK_KEY = "ingest:drain:maintenance-lock"
LOCK_TTL_MS = 10 * 60 * 1000  # outlives any one compaction or replay; freed by the holder before
_RELEASE_LUA = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


class MaintenanceBusy(RuntimeError):
    """Another compaction or replay holds the lake maintenance lock."""


@contextlib.contextmanager
def maintenance_lock(client: redis.Redis, wait_seconds: float = 0.0):
    """Hold the lake maintenance lock (raises MaintenanceBusy if taken after `wait_seconds`)."""
    import time

    token = f"{os.getpid()}:{uuid.uuid4().hex}"
    deadline = time.monotonic() + wait_seconds
    while not client.set(LOCK_KEY, token, nx=True, px=LOCK_TTL_MS):
        if time.monotonic() >= deadline:
            raise MaintenanceBusy("another compaction or replay is running; try again shortly")
        time.sleep(0.1)
    try:
        yield
    finally:
        client.eval(_RELEASE_LUA, 1, LOCK_KEY, token)


@dataclass
class MaintenanceReport:
    compacted: list[Compacted] = field(default_factory=list)
    trimmed: list[Trimmed] = field(default_factory=list)
    dedup_hashes_dropped: int = 0
    pins_collected: int = 0
    skipped: str = ""


def maintain_lake(log: DrainLog, lake: Path, *, retention: timedelta, compaction_grace: timedelta,
                  target_rows: int, retired_grace: timedelta, compaction_limit: int | None = 4) -> MaintenanceReport:
    """One pass: compact closed hours, trim streams, forget old dedup state, collect retired pins."""
    report = MaintenanceReport()
    try:
        with maintenance_lock(log.client):
            report.compacted = compact_closed_hours(log, lake, compaction_grace, target_rows,
                                                    limit=compaction_limit)
    except MaintenanceBusy as busy:
        report.skipped = str(busy)
    report.trimmed = trim_streams(log, retention)
    report.dedup_hashes_dropped = forget_dedup_state(log)
    report.pins_collected = collect_retired_pins(lake, retired_grace.total_seconds())
    return report


def forget_dedup_state(log: DrainLog) -> int:
    """Drop dedup hashes two hours or more behind each stream's cursor: a drain only ever looks up
    its own hour and the one before, and the next range starts at or after the cursor's hour."""
    dropped = 0
    for event_type in EVENT_TYPES.values():
        cursor = log.cursor(event_type.stream)
        if cursor == "0-0":
            continue
        cursor_hour = entry_ms(cursor) // dedup.HOUR_MS * dedup.HOUR_MS
        dropped += dedup.forget_hours_before(log.client, event_type.stream, cursor_hour - dedup.HOUR_MS)
    return dropped
