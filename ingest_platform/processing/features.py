"""The feature store, in Feast's vocabulary.

- Entities: `user` (key user_id) and `track` (key track_id).
- Feature views: `user_features`, `track_features`, `user_track_affinity`, each with its features
  over the windows 1 h, 24 h, 7 d and 30 d, one row per entity and hour with activity, stamped
  `feature_timestamp` = the end of that hour (exact at that instant). The offline store keeps the
  whole history (lake Parquet, warehouse views of the same names); it is rebuilt in full from the
  landed events on every materialisation, from one scan (hourly tiles per user and track), with
  the window sums from processing/windows.py.
- Point-in-time retrieval (`get_historical_features`): labels with entity keys and an
  `event_timestamp` in, each label's features as of that instant out (DuckDB ASOF JOIN on the
  latest row with feature_timestamp <= event_timestamp, on keys and timestamps only, then that
  row's features by equality), never a value computed from a later event.
  Windows that have fully elapsed since that row read 0 (see `as_of_columns`).
- Online store: the latest values per entity, pushed to Redis (processing/online.py).
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from ingest_platform.contract import USER_INTERACTION
from ingest_platform.processing import engine, windows
from ingest_platform.processing.catalog import (
    FEATURE_WINDOWS,
    TRACK_FEATURES,
    USER_FEATURES,
    USER_TRACK_AFFINITY,
    DerivedDataset,
)
from ingest_platform.processing.sql import load_sql


@dataclass(frozen=True)
class FeatureView:
    dataset: DerivedDataset
    entity_keys: tuple[str, ...]
    prefix: str
    counts: tuple[str, ...]  # hourly counts summed over each window
    derived: dict[str, str]  # feature -> SQL over the window's counts ({w} is the window's suffix)

    @property
    def name(self) -> str:
        return self.dataset.name

    @property
    def feature_names(self) -> list[str]:
        return [c.name for c in self.dataset.columns if c.name not in (*self.entity_keys, "feature_timestamp")]

    def split(self, feature: str) -> tuple[str, str]:
        """'user_plays_24h' -> ('plays', '24h')."""
        metric, window = feature[len(self.prefix):].rsplit("_", 1)
        return metric, window


def _count(action: str) -> str:
    return f"count(*) FILTER (WHERE action = '{action}')"


# What the shared hourly tiles count per (user, track, hour).
TILE_COUNTS = {"events": "count(*)", "plays": _count("play"), "skips": _count("skip"), "likes": _count("like"),
               "dislikes": _count("dislike")}
RATIOS = ("skip_rate", "like_ratio")  # NULL when their window has no activity (or has elapsed)

USER_VIEW = FeatureView(USER_FEATURES, ("user_id",), "user_", ("events", "plays", "skips", "likes"),
                        {"skip_rate": "skips_{w} / nullif(plays_{w}, 0)"})
TRACK_VIEW = FeatureView(TRACK_FEATURES, ("track_id",), "track_", ("plays", "skips", "likes", "dislikes"),
                         {"skip_rate": "skips_{w} / nullif(plays_{w}, 0)",
                          "like_ratio": "likes_{w} / nullif(likes_{w} + dislikes_{w}, 0)"})
AFFINITY_VIEW = FeatureView(USER_TRACK_AFFINITY, ("user_id", "track_id"), "affinity_",
                            ("plays", "skips", "likes", "dislikes"),
                            {"score": "plays_{w} + 3 * likes_{w} - 2 * skips_{w} - 3 * dislikes_{w}"})

VIEWS: dict[str, FeatureView] = {v.name: v for v in (USER_VIEW, TRACK_VIEW, AFFINITY_VIEW)}
ENTITIES = {"user": ("user_id",), "track": ("track_id",)}


def feature_tiles_sql() -> str:
    return load_sql("feature_tiles").format(counts=", ".join(f"{sql} AS {name}" for name, sql in TILE_COUNTS.items()))


TILE_KEYS = ("user_id", "track_id")  # the grain of feature_tiles (with the hour)


def view_tiles_sql(view: FeatureView) -> str:
    """The view's hourly tiles, ordered for the window kernel."""
    grouped = view.entity_keys != TILE_KEYS
    counts = [f"sum({c})::BIGINT AS {c}" if grouped else c for c in view.counts]
    return load_sql("feature_view_tiles").format(keys=", ".join(view.entity_keys), hourly_counts=", ".join(counts),
                                                 group_by="GROUP BY ALL" if grouped else "")


def feature_view_sql(view: FeatureView) -> str:
    """The view's rows from `windowed` (its tiles with the window sums `<count>_<window>`)."""
    outputs = []
    for column in view.feature_names:
        metric, window = view.split(column)
        expression = view.derived[metric].format(w=window) if metric in view.derived else f"{metric}_{window}"
        outputs.append(f"{expression} AS {column}")
    return load_sql("feature_view").format(keys=", ".join(view.entity_keys), outputs=", ".join(outputs))


def as_of_columns(view: FeatureView, alias: str, at: str) -> list[str]:
    """The view's features as of the instant `at` (SQL), read from its latest row at or before it.

    A row is exact at its feature_timestamp T. Later, with no newer row (no activity since), a
    window that has fully elapsed (hour of `at` >= T + window) holds nothing: counts read 0 and
    ratios NULL. A window still overlapping T keeps the row's value (as Feast does with a TTL).
    """
    columns = []
    for feature in view.feature_names:
        metric, window = view.split(feature)
        elapsed = (f"date_trunc('hour', {at}) >= {alias}.feature_timestamp + "
                   f"INTERVAL {FEATURE_WINDOWS[window]} HOUR")
        expired_value = "NULL" if metric in RATIOS else "0"
        columns.append(f"CASE WHEN {elapsed} THEN {expired_value} ELSE {alias}.{feature} END AS {feature}")
    return columns


@dataclass(frozen=True)
class MaterializedView:
    view: FeatureView
    rows: int
    path: Path


def materialize_feature_views(lake: Path, names: list[str] | None = None,
                              threads: int | None = None) -> list[MaterializedView]:
    """Rebuild the offline store of each feature view from all landed interactions (one scan)."""
    chosen = [VIEWS[n] for n in (names or VIEWS)]
    results = []
    with engine.connect(lake, threads, (USER_INTERACTION.dataset,)) as con, ThreadPoolExecutor(1) as writer:
        # Row order within a file means nothing here (readers join or sort); not keeping it lets
        # DuckDB write in parallel with less memory.
        con.execute("SET preserve_insertion_order = false")
        con.execute(feature_tiles_sql())
        # A view's Parquet write (DuckDB, GIL released) overlaps the next view's tiles and window
        # sums, filling the gaps where either runs on one core (~1 s of ~19 s wall at 10M events;
        # no CPU saved). At most one view waits to be written: peak memory stayed ~4.2 GB.
        pending: Future[MaterializedView] | None = None
        for view in chosen:
            windowed = _window_sums(con, view)
            if pending is not None:
                results.append(pending.result())
            pending = writer.submit(_write, con.cursor(), view, windowed, lake)
            del windowed
        if pending is not None:
            results.append(pending.result())
    return results


def _window_sums(con: duckdb.DuckDBPyConnection, view: FeatureView) -> pa.Table:
    tiles = con.sql(view_tiles_sql(view)).to_arrow_table()
    return windows.window_sums(tiles, view.entity_keys, view.counts, FEATURE_WINDOWS)


def _write(cursor: duckdb.DuckDBPyConnection, view: FeatureView, windowed: pa.Table, lake: Path) -> MaterializedView:
    """On its own cursor (a connection of the same database): `windowed` is registered there only."""
    with cursor:
        cursor.execute("SET preserve_insertion_order = false")
        cursor.register("windowed", windowed)
        version, rows = engine.write_version(cursor, view.dataset, lake, feature_view_sql(view))
    return MaterializedView(view, rows, version)


def latest_rows(lake: Path, view: FeatureView, now: datetime | None = None) -> pa.Table:
    """The latest values per entity as of `now` (what the online store serves)."""
    with engine.connect(lake, datasets=(view.name,)) as con:
        sql = load_sql("latest_features").format(
            view=view.name, keys=", ".join(view.entity_keys),
            columns=", ".join(as_of_columns(view, "latest", "$now::TIMESTAMPTZ")))
        return con.sql(sql, params={"now": now or datetime.now(timezone.utc)}).to_arrow_table()


# --- point-in-time retrieval ---------------------------------------------------------------------

LABEL_TIMESTAMP = "event_timestamp"


def get_historical_features(lake: Path, labels: pa.Table | Path | str, views: list[str] | None = None,
                            threads: int | None = None) -> pa.Table:
    """Join each label to the features as of its `event_timestamp` (exclusive of any later value).

    `labels` needs `event_timestamp` and the entity keys of the requested views (default: every
    view whose keys are all present). Output: the labels, in their order, with every feature of
    each view and `<view>__feature_timestamp` (which row was used; NULL when none existed yet).
    """
    with engine.connect(lake, threads, tuple(VIEWS)) as con:
        return retrieve(con, labels, views)


def retrieve(con: duckdb.DuckDBPyConnection, labels: pa.Table | Path | str, views: list[str] | None) -> pa.Table:
    source = _label_source(con, labels)
    columns = {row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}
    if LABEL_TIMESTAMP not in columns:
        raise ValueError(f"labels need an {LABEL_TIMESTAMP!r} column (got {sorted(columns)})")
    chosen = [VIEWS[n] for n in views] if views else [v for v in VIEWS.values() if set(v.entity_keys) <= columns]
    missing = {v.name: sorted(set(v.entity_keys) - columns) for v in chosen if not set(v.entity_keys) <= columns}
    if missing:
        raise ValueError(f"labels lack entity keys for {missing}")
    # Timestamps without a zone are taken as UTC (the session zone), like everything else here.
    con.execute(f"CREATE OR REPLACE TEMP TABLE labels AS SELECT * REPLACE "
                f"(CAST({LABEL_TIMESTAMP} AS TIMESTAMPTZ) AS {LABEL_TIMESTAMP}), row_number() OVER () AS __label_row "
                f"FROM {source}")
    asof, matched, lookups, selected = [], [], [], []
    for view in chosen:
        alias, used = view.name, f"{view.name}__feature_timestamp"
        keys = ", ".join(view.entity_keys)
        on = " AND ".join(f"labels.{k} = {alias}.{k}" for k in view.entity_keys)
        asof.append(f"ASOF LEFT JOIN (SELECT {keys}, feature_timestamp FROM {view.name}) AS {alias} ON {on} "
                    f"AND labels.{LABEL_TIMESTAMP} >= {alias}.feature_timestamp")
        matched.append(f"{alias}.feature_timestamp AS {used}")
        equal = " AND ".join(f"matched.{k} = {alias}.{k}" for k in view.entity_keys)
        lookups.append(f"LEFT JOIN {view.name} AS {alias} ON {equal} AND matched.{used} = {alias}.feature_timestamp")
        selected += as_of_columns(view, alias, f"matched.{LABEL_TIMESTAMP}")
        selected.append(f"matched.{used}")
    con.execute(load_sql("point_in_time_match").format(matched=", ".join(matched), joins="\n".join(asof)))
    query = load_sql("point_in_time").format(
        matched_columns=", ".join(f"{v.name}__feature_timestamp" for v in chosen), columns=", ".join(selected),
        joins="\n".join(lookups))
    return con.sql(query).to_arrow_table()


def _label_source(con: duckdb.DuckDBPyConnection, labels: pa.Table | Path | str) -> str:
    if isinstance(labels, pa.Table):
        con.register("labels_input", labels)
        return "labels_input"
    return f"read_parquet({engine.duckdb_string(str(labels))})"


def write_table(table: pa.Table, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".csv":
        import pyarrow.csv as pacsv

        pacsv.write_csv(table, out)
    else:
        pq.write_table(table, out, compression="zstd")
