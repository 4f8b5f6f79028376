"""Building stream entries the way the gateway does, and reading back what landed."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import msgspec
import pyarrow.parquet as pq
import redis

from ingest_platform.contract import (
    USER_INTERACTION,
    StreamEntry,
    StreamEvent,
    encode_stream_entry,
)
from ingest_platform.storage.lake import dataset_files

STREAM = USER_INTERACTION.stream
DATASET = USER_INTERACTION.dataset


def interaction(event_id: str, action: str = "play", user: str = "u1") -> StreamEvent:
    fields = {"user_id": user, "session_id": "s1", "track_id": "t1", "action": action,
              "timestamp": "2026-11-26T10:00:00Z"}
    raw = msgspec.json.encode({"user_interaction": {**fields, "event_id": event_id}})
    return StreamEvent(event_id=event_id, fields=fields, raw=msgspec.Raw(raw))


def entry_fields(events: list[StreamEvent], received_at: str = "2026-11-26T10:00:01Z") -> dict[bytes, bytes]:
    entry = StreamEntry(event_type="user_interaction", received_at=received_at, api_key_id="k1", events=events)
    return encode_stream_entry(entry)


def append(client: redis.Redis, events: list[StreamEvent], entry_id: str = "*", stream: str = STREAM) -> str:
    """One XADD, like one gateway request; returns the entry id (the acknowledgement)."""
    return client.xadd(stream, entry_fields(events), id=entry_id).decode()


def append_batches(client: redis.Redis, prefix: str, entries: int, per_entry: int,
                   id_ms: int | None = None) -> list[str]:
    """`entries` entries of `per_entry` distinct events; explicit ids at `id_ms` + i when given."""
    ids = []
    pipe = client.pipeline(transaction=False)
    for i in range(entries):
        events = [interaction(f"{prefix}-{i}-{j}") for j in range(per_entry)]
        pipe.xadd(STREAM, entry_fields(events), id="*" if id_ms is None else f"{id_ms + i}-0")
        ids += [e.event_id for e in events]
    pipe.execute()
    return ids


def landed_ids(lake: Path, dataset: str = DATASET) -> list[str]:
    """Every event_id in the hive layout of `dataset` (duplicates kept, so callers can see them)."""
    ids: list[str] = []
    for path in dataset_files(lake, dataset):
        ids += pq.read_table(path, columns=["event_id"]).column("event_id").to_pylist()
    return ids


def hour_ms(year=2026, month=11, day=26, hour=10) -> int:
    return int(datetime(year, month, day, hour, tzinfo=timezone.utc).timestamp() * 1000)
