"""The full rebuild of the feature views against a plain SQL definition of the same rows (DuckDB
window functions over hourly tiles, the way they were first built), on keys that stress the
integer coding: empty strings, unicode, keys in one view but not another."""

from __future__ import annotations

import random
from datetime import timedelta

import pyarrow.parquet as pq
import pytest

from ingest_platform.processing import engine, features
from ingest_platform.processing.catalog import FEATURE_WINDOWS
from ingest_platform_tests.downstream.lake_data import at, interactions

ACTIONS = ["play", "pause", "skip", "like", "dislike"]
USERS = ["u1", "", "ü☃", "𝄞", "u1 ", "U1"]
TRACKS = ["t1", "", "ß", "t1\x00x"]


def reference_sql(view: features.FeatureView) -> str:
    """The view's rows as the straightforward SQL: tiles per entity and hour, summed over RANGE
    windows, ratios and scores from the sums."""
    keys = ", ".join(view.entity_keys)
    tiles = ", ".join(["count(*) AS events"] + [f"count(*) FILTER (WHERE action = '{action}') AS {name}"
                                                 for name, action in features.COUNTED_ACTIONS.items()])
    sums = ", ".join(f"sum({count}) OVER (PARTITION BY {keys} ORDER BY bucket RANGE BETWEEN {hours - 1} PRECEDING "
                     f"AND CURRENT ROW) AS {count}_{window}"
                     for window, hours in FEATURE_WINDOWS.items() for count in view.counts)
    columns = []
    for column in view.dataset.columns[len(view.entity_keys) + 1:]:
        metric, window = view.split(column.name)
        source = column.computed.replace(view.prefix, "") if column.computed else f"{metric}_{window}"
        columns.append(f"CAST({source} AS {'DOUBLE' if column.computed else 'BIGINT'}) AS {column.name}")
    return f"""
        WITH tiles AS (SELECT {keys}, epoch_us(timestamp) // 3600000000 AS bucket, {tiles}
                       FROM user_interactions GROUP BY ALL),
             windowed AS (SELECT {keys}, bucket, {sums} FROM tiles)
        SELECT {keys}, to_timestamp((bucket + 1) * 3600) AS feature_timestamp, {", ".join(columns)}
        FROM windowed"""


@pytest.fixture
def lake(tmp_path):
    rng = random.Random(11)
    start = at("2026-10-01 00:00:00")
    rows = []
    for i in range(1500):
        # Most events in a few days (windows overlap), some far apart (windows elapse), one at an
        # hour edge exactly.
        offset = timedelta(seconds=rng.randrange(4 * 86_400) if i % 10 else rng.randrange(60 * 86_400))
        when = start if i == 0 else start + offset
        rows.append((f"e{i}", rng.choice(USERS), "s", rng.choice(TRACKS), rng.choice(ACTIONS),
                     when.strftime("%Y-%m-%d %H:%M:%S")))
    # A user with only a pause (counted by `events` only) and a track nobody else touches.
    rows.append(("lonely", "only-pauses", "s", "t-unique", "pause", "2026-10-02 05:59:59"))
    lake = tmp_path / "lake"
    for part in range(3):  # several files, so the keys arrive in several Arrow chunks
        interactions(lake, rows[part::3], name=f"part{part}.parquet")
    return lake


def test_rebuild_matches_the_sql_definition_row_for_row(lake):
    built = features.materialize_feature_views(lake)
    assert [b.view.name for b in built] == list(features.VIEWS)
    with engine.connect(lake, datasets=("user_interactions", *features.VIEWS)) as con:
        for view in features.VIEWS.values():
            ours = con.sql(f"SELECT * FROM {view.name}").to_arrow_table()
            expected = con.sql(reference_sql(view)).to_arrow_table()
            assert ours.schema == view.dataset.schema
            key = [(k, "ascending") for k in (*view.entity_keys, "feature_timestamp")]
            assert ours.sort_by(key).to_pylist() == expected.sort_by(key).to_pylist(), view.name
            assert ours.num_rows == next(b.rows for b in built if b.view is view)
        users = {r[0] for r in con.execute("SELECT DISTINCT user_id FROM user_features").fetchall()}
        tracks = {r[0] for r in con.execute("SELECT DISTINCT track_id FROM track_features").fetchall()}
    assert users == {*USERS, "only-pauses"} and tracks == {*TRACKS, "t-unique"}


def test_one_view_alone_and_files_hold_only_the_stored_columns(lake):
    [built] = features.materialize_feature_views(lake, ["track_features"])
    stored = pq.read_schema(next((built.path).glob("*.parquet")))
    assert stored.names == [c.name for c in features.TRACK_VIEW.dataset.stored_columns]
    assert "track_skip_rate_24h" not in stored.names  # computed by the warehouse view when read
    with engine.connect(lake, datasets=("track_features",)) as con:
        row = con.execute("SELECT track_plays_30d, track_skips_30d, track_skip_rate_30d FROM track_features "
                          "WHERE track_id = 't-unique'").fetchall()
    assert row == [(0, 0, None)]
