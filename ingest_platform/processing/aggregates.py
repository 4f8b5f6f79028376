"""Analytics aggregates by event time: track_hourly_stats, user_daily_engagement,
recommendation_feedback_stats and genre_hourly_trends.

Each partition is one event hour (or day) and reads events with timestamps in it from whichever
arrival partition they landed in, so late events are counted when the partition is rebuilt.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa

from ingest_platform.processing import engine
from ingest_platform.processing.catalog import (
    GENRE_HOURLY_TRENDS,
    RECOMMENDATION_FEEDBACK_STATS,
    TRACK_HOURLY_STATS,
    USER_DAILY_ENGAGEMENT,
    DerivedDataset,
)
from ingest_platform.processing.sql import load_sql

# Events land at or after they happen; a client clock may run ahead. Partitions landed more than
# this before the hour cannot hold its events and are skipped without being opened.
CLOCK_SKEW_ALLOWANCE = timedelta(days=1)

HOURLY_AGGREGATES = (TRACK_HOURLY_STATS, RECOMMENDATION_FEEDBACK_STATS, GENRE_HOURLY_TRENDS)


@dataclass(frozen=True)
class AggregatePartition:
    dataset: DerivedDataset
    rows: int
    path: Path
    table: pa.Table


def build_hourly(dataset: DerivedDataset, lake: Path, hour: datetime, enrichment_enabled: bool,
                 threads: int | None = None) -> AggregatePartition:
    params = {"hour_start": hour, "min_arrival_date": (hour - CLOCK_SKEW_ALLOWANCE).date()}
    table = _run(dataset, lake, params, enrichment_enabled, threads)
    path = engine.write_partition(dataset, lake, table, f"{hour:%Y-%m-%d}", hour.hour)
    return AggregatePartition(dataset, table.num_rows, path, engine.to_dataset_table(dataset, table))


def build_daily(dataset: DerivedDataset, lake: Path, day: datetime, enrichment_enabled: bool) -> AggregatePartition:
    params = {"day_start": day.date(), "min_arrival_date": (day - CLOCK_SKEW_ALLOWANCE).date()}
    table = _run(dataset, lake, params, enrichment_enabled, None)
    path = engine.write_partition(dataset, lake, table, f"{day:%Y-%m-%d}")
    return AggregatePartition(dataset, table.num_rows, path, engine.to_dataset_table(dataset, table))


def build_user_daily_engagement(lake: Path, day: datetime, enrichment_enabled: bool) -> AggregatePartition:
    return build_daily(USER_DAILY_ENGAGEMENT, lake, day, enrichment_enabled)


def _run(dataset: DerivedDataset, lake: Path, params: dict, enrichment_enabled: bool,
         threads: int | None) -> pa.Table:
    with engine.connect(lake, threads, engine.event_source_datasets(enrichment_enabled)) as con:
        engine.define_event_sources(con, enrichment_enabled)
        return con.sql(load_sql(dataset.name), params=params).to_arrow_table()


@dataclass(frozen=True)
class LateHour:
    event_hour: datetime
    newest_received_at: datetime
    events: int


def late_event_hours(lake: Path, since: datetime, enrichment_enabled: bool) -> tuple[list[LateHour], datetime]:
    """Event hours that got events after they closed (received after `since`), and the new
    watermark (the newest received_at seen, or `since`)."""
    with engine.connect(lake, datasets=engine.event_source_datasets(enrichment_enabled)) as con:
        engine.define_event_sources(con, enrichment_enabled)
        rows = con.sql(load_sql("late_event_hours"), params={"since": since}).fetchall()
    watermark = rows[-1][1] or since
    return [LateHour(*row) for row in rows[:-1]], watermark
