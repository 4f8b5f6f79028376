"""Hand-made landed events and reference files for the downstream tests."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ingest_platform.contract import FEEDBACK_EVENT, USER_INTERACTION
from ingest_platform.storage.lake import partition_dir, write_parquet_atomic


def at(text: str) -> datetime:
    """'2026-11-26 10:05:00' -> an aware UTC datetime."""
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def land(lake: Path, event_type, rows: list[dict], name: str = "batch.parquet",
         arrival: datetime | None = None) -> Path:
    """Write rows as the drain would: into the hour partition they arrived in (default: their
    own timestamp's hour), with the contract's schema."""
    schema = event_type.arrow_schema
    full = []
    for i, row in enumerate(rows):
        received = arrival or row["timestamp"]
        full.append({"event_id": row.get("event_id", f"{name}-{i}"), "received_at": received,
                     "api_key_id": "k1", "stream_id": f"{i}-0/0", **row})
    table = pa.Table.from_pylist(full, schema=schema)
    hour = (arrival or rows[0]["timestamp"]).replace(minute=0, second=0, microsecond=0)
    path = partition_dir(lake, event_type.dataset, hour) / name
    write_parquet_atomic(table, path)
    return path


def interactions(lake: Path, rows: list[tuple], name: str = "batch.parquet", arrival: datetime | None = None) -> Path:
    """rows: (event_id, user, session, track, action, 'YYYY-MM-DD HH:MM:SS')."""
    return land(lake, USER_INTERACTION, [
        {"event_id": e, "user_id": u, "session_id": s, "track_id": t, "action": a, "timestamp": at(ts)}
        for e, u, s, t, a, ts in rows], name, arrival)


def feedback(lake: Path, rows: list[tuple], name: str = "batch.parquet") -> Path:
    """rows: (event_id, user, recommendation, type, rating, 'YYYY-MM-DD HH:MM:SS')."""
    return land(lake, FEEDBACK_EVENT, [
        {"event_id": e, "user_id": u, "recommendation_id": r, "feedback_type": k, "rating": v, "timestamp": at(ts)}
        for e, u, r, k, v, ts in rows], name)


def reference(data_dir: Path) -> None:
    """Two users, three tracks (t3 is missing on purpose), two served recommendations."""
    directory = data_dir / "reference"
    directory.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"user_id": ["u1", "u2"], "country": ["SE", "BR"],
                             "subscription_tier": ["premium", "free"]}), directory / "users.parquet")
    pq.write_table(pa.table({"track_id": ["t1", "t2"], "title": ["One", "Two"], "artist": ["A", "B"],
                             "genre": ["jazz", "rock"], "duration_ms": [200_000, 100_000],
                             "release_year": [1999, 2020]}), directory / "tracks.parquet")
    pq.write_table(pa.table({
        "recommendation_id": ["r1", "r2"], "user_id": ["u1", "u1"], "track_id": ["t1", "t2"],
        "model_version": ["m1", "m2"], "rank": [1, 2],
        "served_at": pa.array([at("2026-11-26 09:00:00")] * 2, pa.timestamp("us", tz="UTC"))}),
        directory / "recommendations.parquet")
