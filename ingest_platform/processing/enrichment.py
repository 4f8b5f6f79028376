"""Enriched events: each landed hour partition, 1:1, with reference context and session features."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pyarrow as pa

from ingest_platform.processing import engine
from ingest_platform.processing.catalog import ENRICHED_FEEDBACK_EVENTS, ENRICHED_USER_INTERACTIONS, DerivedDataset
from ingest_platform.processing.sql import load_sql

# How far before and after a partition's events a session is traced (position, start, next stop).
SESSION_LOOKBACK_HOURS = 6


@dataclass(frozen=True)
class EnrichedPartition:
    dataset: DerivedDataset
    rows: int
    miss_rates: dict[str, float]  # reference -> share of rows it had no row for
    path: Path | None
    table: pa.Table


def enrich_user_interactions(lake: Path, hour: datetime) -> EnrichedPartition:
    return _enrich(lake, hour, ENRICHED_USER_INTERACTIONS, "enrich_user_interactions",
                   {"lookback_hours": SESSION_LOOKBACK_HOURS}, ("user", "track"))


def enrich_feedback_events(lake: Path, hour: datetime) -> EnrichedPartition:
    return _enrich(lake, hour, ENRICHED_FEEDBACK_EVENTS, "enrich_feedback_events", {}, ("user", "recommendation"))


def _enrich(lake: Path, hour: datetime, dataset: DerivedDataset, sql: str, params: dict,
            references: tuple[str, ...]) -> EnrichedPartition:
    with engine.connect(lake, datasets=(*engine.LANDED_EVENTS, "users", "tracks", "recommendations")) as con:
        table = con.sql(load_sql(sql), params={"date": hour.date(), "hour": hour.hour, **params}).to_arrow_table()
    miss_rates = {name: _share_true(table, f"_{name}_missing") for name in references}
    path = None
    if table.num_rows:
        path = engine.write_partition(dataset, lake, table, f"{hour:%Y-%m-%d}", hour.hour)
    else:  # nothing landed in the hour (or it was emptied): drop a stale file rather than keep it
        stale = dataset.root(lake) / f"date={hour:%Y-%m-%d}" / f"hour={hour:%H}" / "part.parquet"
        stale.unlink(missing_ok=True)
    return EnrichedPartition(dataset, table.num_rows, miss_rates, path, engine.to_dataset_table(dataset, table))


def _share_true(table: pa.Table, column: str) -> float:
    if table.num_rows == 0:
        return 0.0
    return round(table.column(column).to_pylist().count(True) / table.num_rows, 6)
