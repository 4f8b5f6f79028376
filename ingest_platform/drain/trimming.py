"""Trimming: entries leave Redis only when they are both durable in the lake and past retention.

The bound is `min(committed cursor, now - retention)`: the committed cursor moves only after every
file of its range was fsynced and renamed into place, so nothing at or below it is undrained, and
the retention keeps drained entries replayable (`ingest-platform replay`) for that long. XTRIM
MINID removes ids strictly below the bound, so the entry at the cursor itself stays (the drain
reads after it). A stream's backlog is bounded by the gateway's backpressure, never by trimming.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta

from ingest_platform.contract import EVENT_TYPES
from ingest_platform.storage.event_log import ZERO_ID, DrainLog, entry_ms


@dataclass
class Trimmed:
    stream: str
    below: str
    removed: int


def trim_bound(cursor: str, retention: timedelta, now_ms: int) -> str | None:
    """The MINID for one stream, or None when nothing may go yet."""
    if cursor == ZERO_ID:
        return None
    retention_ms = now_ms - int(retention.total_seconds() * 1000)
    if retention_ms <= 0:
        return None
    retained = f"{retention_ms}-0"
    return cursor if entry_ms(cursor) < retention_ms else retained


def trim_streams(log: DrainLog, retention: timedelta, now_ms: int | None = None) -> list[Trimmed]:
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    done = []
    for event_type in EVENT_TYPES.values():
        stream = event_type.stream
        bound = trim_bound(log.cursor(stream), retention, now_ms)
        if bound is None:
            continue
        removed = log.trim_below(stream, bound)
        done.append(Trimmed(stream, bound, removed))
    return done
