"""The feature store, in Feast's vocabulary.

- Entities: `user` (key user_id) and `track` (key track_id).
- Feature views: `user_features`, `track_features`, `user_track_affinity`, each with its features
  over the windows 1 h, 24 h, 7 d and 30 d, one row per entity and hour with activity, stamped
  `feature_timestamp` = the end of that hour (exact at that instant). The offline store keeps the
  whole history (lake Parquet, warehouse views of the same names); it is rebuilt in full from the
  landed events on every materialisation, from one scan (entity keys coded as integers by
  processing/keys.py), with the window counts from processing/windows.py.
- Point-in-time retrieval (`get_historical_features`): labels with entity keys and an
  `event_timestamp` in, each label's features as of that instant out (DuckDB ASOF JOIN on the
  latest row with feature_timestamp <= event_timestamp, on keys and timestamps only, then that
  row's features by equality), never a value computed from a later event.
  Windows that have fully elapsed since that row read 0 (see `as_of_columns`).
- Online store: the latest values per entity, pushed to Redis (processing/online.py).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from math import prod
from pathlib import Path

import duckdb
import polars as pl
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
from ingest_platform.processing.keys import EncodedKeys, encode_keys
from ingest_platform.processing.sql import load_sql


@dataclass(frozen=True)
class FeatureView:
    dataset: DerivedDataset
    entity_keys: tuple[str, ...]
    prefix: str
    counts: tuple[str, ...]  # what is counted over each window (ratios and scores: see catalog.py)

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


# What the feature views count. The kernel reads each event's action as a code: its index here, or
# OTHER_ACTION for any other action (pause, or none), which counts only towards `events`.
COUNTED_ACTIONS = {"plays": "play", "skips": "skip", "likes": "like", "dislikes": "dislike"}
OTHER_ACTION = len(COUNTED_ACTIONS)
EVERY_EVENT = "events"
RATIOS = ("skip_rate", "like_ratio")  # NULL when their window has no activity (or has elapsed)

USER_VIEW = FeatureView(USER_FEATURES, ("user_id",), "user_", ("events", "plays", "skips", "likes"))
TRACK_VIEW = FeatureView(TRACK_FEATURES, ("track_id",), "track_", ("plays", "skips", "likes", "dislikes"))
AFFINITY_VIEW = FeatureView(USER_TRACK_AFFINITY, ("user_id", "track_id"), "affinity_",
                            ("plays", "skips", "likes", "dislikes"))

VIEWS: dict[str, FeatureView] = {v.name: v for v in (USER_VIEW, TRACK_VIEW, AFFINITY_VIEW)}
ENTITIES = {"user": ("user_id",), "track": ("track_id",)}


def feature_events_sql(keys: list[str]) -> str:
    codes = " ".join(f"WHEN '{action}' THEN {code}" for code, action in enumerate(COUNTED_ACTIONS.values()))
    return load_sql("feature_events").format(keys=", ".join(keys),
                                             action_code=f"CASE action {codes} ELSE {OTHER_ACTION} END")


def action_codes(view: FeatureView) -> dict[str, int | None]:
    """The view's counts -> the action code each counts (None: every event)."""
    codes = {name: code for code, name in enumerate(COUNTED_ACTIONS)}
    return {count: None if count == EVERY_EVENT else codes[count] for count in view.counts}


def feature_view_sql(view: FeatureView) -> str:
    """The view's stored rows from `windowed` (entity keys, `bucket` and the window counts
    `<count>_<window>`); its computed features (ratios, scores) are left to the warehouse view."""
    outputs = []
    for column in view.dataset.stored_columns:
        if column.name not in (*view.entity_keys, "feature_timestamp"):
            metric, window = view.split(column.name)
            outputs.append(f"{metric}_{window} AS {column.name}")
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
    with engine.connect(lake, threads, (USER_INTERACTION.dataset,)) as con, ThreadPoolExecutor(2) as pool:
        # Row order within a file means nothing here (readers join or sort); not keeping it lets
        # DuckDB write in parallel with less memory.
        con.execute("SET preserve_insertion_order = false")
        events = _read_events(con, sorted({k for view in chosen for k in view.entity_keys}), pool)
        # Two views at a time, each its window counts (polars) then its Parquet write (DuckDB, on a
        # cursor of its own): both release the GIL, and each has stretches on one core, so two
        # side by side keep both cores busy (one after the other left ~1/3 of them idle).
        built = {view.name: pool.submit(_build, con.cursor(), view, events, lake) for view in chosen}
        return [built[view.name].result() for view in chosen]


def _build(cursor: duckdb.DuckDBPyConnection, view: FeatureView, events: "_Events", lake: Path) -> MaterializedView:
    return _write(cursor, view, _window_counts(view, events), lake)


@dataclass(frozen=True)
class _Events:
    """The landed interactions as the kernel reads them: integer columns only."""
    keys: dict[str, EncodedKeys]
    bucket: pl.Series  # hours since the epoch
    action: pl.Series  # code (COUNTED_ACTIONS)


def _read_events(con: duckdb.DuckDBPyConnection, key_columns: list[str], pool: ThreadPoolExecutor) -> _Events:
    table = con.sql(feature_events_sql(key_columns)).to_arrow_table()
    encoded = pool.map(encode_keys, [table.column(k) for k in key_columns])  # pyarrow releases the GIL
    return _Events(dict(zip(key_columns, encoded)),
                   _series(table.column("bucket")), _series(table.column("action")))


def _series(column: pa.ChunkedArray) -> pl.Series:
    series = pl.from_arrow(column)
    assert isinstance(series, pl.Series)
    return series


def _window_counts(view: FeatureView, events: _Events) -> pa.Table:
    """The view's rows as feature_view.sql reads them: its entity keys (strings again), `bucket`
    and `<count>_<window>`."""
    encoded = [events.keys[k] for k in view.entity_keys]
    # One ordinal per entity: the key codes in mixed radix (for the pair, user * tracks + track).
    if prod(max(key.cardinality, 1) for key in encoded) > 2**63 - 1:
        raise ValueError(f"{view.name}: too many distinct entity keys for a 64-bit ordinal")
    ordinal = encoded[0].codes
    for key in encoded[1:]:
        ordinal = ordinal * max(key.cardinality, 1) + key.codes
    counted = windows.window_counts(ordinal, events.bucket, events.action, action_codes(view), FEATURE_WINDOWS)
    entity = counted[windows.ENTITY]
    columns = {}
    for name, key in reversed(list(zip(view.entity_keys, encoded))):
        cardinality = max(key.cardinality, 1)
        columns[name] = key.decode(entity % cardinality)
        entity = entity // cardinality
    table = counted.drop(windows.ENTITY).to_arrow()
    for position, name in enumerate(view.entity_keys):
        table = table.add_column(position, name, columns[name])
    return table


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
