"""Exact numbers on small hand-made data: enrichment, aggregates, feature windows, point in time."""

from __future__ import annotations

from datetime import timedelta

import pyarrow as pa
import pytest

from ingest_platform.processing import aggregates, enrichment, features
from ingest_platform.processing.catalog import TRACK_HOURLY_STATS
from ingest_platform.processing.reference import load_all_references
from ingest_platform_tests.downstream.lake_data import at, feedback, interactions, reference

HOUR = at("2026-11-26 10:00:00")

SESSION = [  # u1 listens in session s1; u2 plays a track missing from the catalogue; u9 is unknown
    ("e1", "u1", "s1", "t1", "play", "2026-11-26 10:00:00"),
    ("e2", "u1", "s1", "t1", "pause", "2026-11-26 10:01:40"),
    ("e3", "u1", "s1", "t1", "play", "2026-11-26 10:02:00"),
    ("e4", "u1", "s1", "t2", "play", "2026-11-26 10:05:00"),
    ("e5", "u1", "s1", "t2", "skip", "2026-11-26 10:05:30"),
    ("e6", "u2", "s2", "t3", "play", "2026-11-26 10:30:00"),
    ("e7", "u9", "s3", "t1", "like", "2026-11-26 10:40:00"),
]


@pytest.fixture
def lake(tmp_path):
    reference(tmp_path)
    lake = tmp_path / "lake"
    load_all_references(tmp_path, lake)
    return lake


def by_id(table: pa.Table, key: str = "event_id") -> dict:
    return {row[key]: row for row in table.to_pylist()}


def test_session_position_and_listening_behaviour(lake):
    interactions(lake, SESSION)
    rows = by_id(enrichment.enrich_user_interactions(lake, HOUR).table)
    assert [rows[e]["position_in_session"] for e in ("e1", "e2", "e3", "e4", "e5")] == [1, 1, 2, 3, 3]
    assert [rows[e]["events_so_far"] for e in ("e1", "e2", "e3", "e4", "e5")] == [0, 1, 2, 3, 4]
    assert rows["e5"]["session_start"] == at("2026-11-26 10:00:00")
    # e1: paused after 100 s of a 200 s track; e3: ran until the next play (180 s); e4: skipped after 30 s.
    assert (rows["e1"]["seconds_to_stop"], rows["e1"]["completion_ratio"]) == (100.0, 0.5)
    assert (rows["e3"]["seconds_to_stop"], rows["e3"]["listened_seconds"], rows["e3"]["completion_ratio"]) == (None, 180.0, 0.9)
    assert (rows["e4"]["seconds_to_stop"], rows["e4"]["completion_ratio"]) == (30.0, 0.3)
    assert rows["e2"]["completion_ratio"] is None  # not a play
    assert (rows["e1"]["hour_of_day"], rows["e1"]["day_of_week"], rows["e1"]["genre"]) == (10, 4, "jazz")


def test_session_continues_across_hour_partitions(lake):
    interactions(lake, SESSION[:3], name="earlier.parquet")  # hour 10
    interactions(lake, [("e8", "u1", "s1", "t2", "play", "2026-11-26 11:00:10")], name="later.parquet")
    rows = by_id(enrichment.enrich_user_interactions(lake, at("2026-11-26 11:00:00")).table)
    assert (rows["e8"]["position_in_session"], rows["e8"]["events_so_far"]) == (3, 3)
    assert rows["e8"]["session_start"] == at("2026-11-26 10:00:00")
    # And the hour before now sees its last play end when the next hour's play landed.
    earlier = by_id(enrichment.enrich_user_interactions(lake, HOUR).table)
    assert earlier["e3"]["listened_seconds"] == 58 * 60 + 10


def test_missing_reference_rows_never_drop_events(lake):
    interactions(lake, SESSION)
    result = enrichment.enrich_user_interactions(lake, HOUR)
    assert result.rows == len(SESSION)
    assert result.miss_rates == {"user": round(1 / 7, 6), "track": round(1 / 7, 6)}
    rows = by_id(result.table)
    assert rows["e6"]["genre"] is None and rows["e7"]["country"] is None


def test_track_hourly_skip_rate(lake):
    interactions(lake, [
        (f"p{i}", f"u{i}", f"s{i}", "t1", "play", f"2026-11-26 10:{i:02d}:00") for i in range(4)
    ] + [("k1", "u1", "s1", "t1", "skip", "2026-11-26 10:10:00"),
         ("l1", "u2", "s2", "t1", "like", "2026-11-26 10:11:00"),
         ("l2", "u3", "s3", "t1", "like", "2026-11-26 10:12:00"),
         ("d1", "u0", "s0", "t1", "dislike", "2026-11-26 10:13:00"),
         ("x1", "u0", "s0", "t1", "play", "2026-11-26 11:00:00")])  # the next hour: not counted
    enrichment.enrich_user_interactions(lake, HOUR)
    stats = aggregates.build_hourly(TRACK_HOURLY_STATS, lake, HOUR, enrichment_enabled=True).table.to_pylist()
    assert stats == [{"event_hour": HOUR, "track_id": "t1", "plays": 4, "pauses": 0, "skips": 1, "likes": 2,
                      "dislikes": 1, "unique_listeners": 4, "skip_rate": 0.25, "like_ratio": 2 / 3}]


def test_recommendation_feedback_by_model_and_rank(lake):
    feedback(lake, [("f1", "u1", "r1", "explicit", 4.0, "2026-11-26 10:10:00"),
                    ("f2", "u1", "r1", "explicit", 5.0, "2026-11-26 10:11:00"),
                    ("f3", "u2", "r1", "implicit", 1.0, "2026-11-26 10:12:00"),
                    ("f4", "u2", "r1", "implicit", 0.0, "2026-11-26 10:13:00"),
                    ("f5", "u2", "rX", "implicit", 1.0, "2026-11-26 10:14:00")])
    result = enrichment.enrich_feedback_events(lake, HOUR)
    assert result.miss_rates["recommendation"] == 0.2
    from ingest_platform.processing.catalog import RECOMMENDATION_FEEDBACK_STATS

    rows = aggregates.build_hourly(RECOMMENDATION_FEEDBACK_STATS, lake, HOUR, True).table.to_pylist()
    assert [(r["model_version"], r["rank"], r["feedback_events"], r["explicit_mean_rating"], r["implicit_positive_rate"])
            for r in rows] == [("m1", 1, 4, 4.5, 0.5), (None, None, 1, None, 1.0)]


def user_feature(lake, user: str, when: str, column: str):
    labels = pa.table({"user_id": [user], "event_timestamp": pa.array([at(when)], pa.timestamp("us", tz="UTC"))})
    return features.get_historical_features(lake, labels, ["user_features"]).to_pylist()[0][column]


def test_window_boundary_is_inclusive_at_start_exclusive_at_end(lake):
    # The row at T = 2026-11-26 11:00 covers [2026-11-25 11:00, 2026-11-26 11:00) for 24 h.
    interactions(lake, [("before", "u1", "s1", "t1", "play", "2026-11-25 10:59:59.999999")], name="a.parquet")
    interactions(lake, [("edge", "u1", "s1", "t1", "play", "2026-11-25 11:00:00")], name="b.parquet")
    interactions(lake, [("last", "u1", "s2", "t1", "play", "2026-11-26 10:30:00")], name="c.parquet")
    features.materialize_feature_views(lake)
    assert user_feature(lake, "u1", "2026-11-26 11:00:00", "user_plays_24h") == 2  # edge and last, not before
    assert user_feature(lake, "u1", "2026-11-26 11:00:00", "user_plays_7d") == 3
    assert user_feature(lake, "u1", "2026-11-26 11:00:00", "user_plays_1h") == 1
    # With no newer activity, a window reads 0 once it has fully elapsed since the row, not before.
    assert user_feature(lake, "u1", "2026-11-26 11:59:59", "user_plays_1h") == 1
    assert user_feature(lake, "u1", "2026-11-26 12:00:00", "user_plays_1h") == 0
    assert user_feature(lake, "u1", "2026-11-27 10:59:59", "user_plays_24h") == 2
    assert user_feature(lake, "u1", "2026-11-27 11:00:00", "user_plays_24h") == 0
    assert user_feature(lake, "u1", "2026-11-27 11:00:00", "user_skip_rate_24h") is None
    assert user_feature(lake, "u1", "2026-12-26 11:00:00", "user_plays_30d") == 0


def test_point_in_time_lookup_never_sees_a_later_value(lake):
    interactions(lake, [("a", "u1", "s1", "t1", "play", "2026-11-26 10:15:00"),
                        ("b", "u1", "s1", "t1", "skip", "2026-11-26 10:20:00")], name="a.parquet")
    interactions(lake, [("c", "u1", "s1", "t2", "play", "2026-11-26 11:30:00")], name="b.parquet")
    features.materialize_feature_views(lake)
    labels = pa.table({
        "user_id": ["u1", "u1", "u1", "u1"], "track_id": ["t1", "t1", "t2", "t2"],
        "event_timestamp": pa.array([at("2026-11-26 10:59:59"), at("2026-11-26 11:00:00"),
                                     at("2026-11-26 11:45:00"), at("2026-11-26 12:00:00")],
                                    pa.timestamp("us", tz="UTC")),
        "label": [0, 1, 0, 1],
    })
    rows = features.get_historical_features(lake, labels).to_pylist()
    # Before 11:00 the hour-10 events are not complete: nothing may be used yet.
    assert rows[0]["user_plays_24h"] is None and rows[0]["user_features__feature_timestamp"] is None
    assert (rows[1]["user_plays_24h"], rows[1]["user_skips_24h"], rows[1]["user_skip_rate_24h"]) == (1, 1, 1.0)
    assert rows[1]["track_skip_rate_24h"] == 1.0 and rows[1]["affinity_score_24h"] == -1.0
    # At 11:45 the 11:30 play has happened but its hour is not complete: still the 11:00 values.
    assert rows[2]["user_plays_24h"] == 1 and rows[2]["user_features__feature_timestamp"] == at("2026-11-26 11:00:00")
    assert rows[2]["affinity_plays_24h"] is None  # (u1, t2) had no complete hour yet
    assert (rows[3]["user_plays_24h"], rows[3]["affinity_plays_24h"]) == (2, 1)
    assert rows[3]["user_plays_1h"] == 1 and rows[3]["user_skips_1h"] == 0  # the 10:00 hour has left 1 h
    assert [r["label"] for r in rows] == [0, 1, 0, 1]  # labels keep their order and columns


def test_labels_need_a_timestamp_and_the_entity_keys(lake):
    interactions(lake, SESSION)
    features.materialize_feature_views(lake)
    with pytest.raises(ValueError, match="event_timestamp"):
        features.get_historical_features(lake, pa.table({"user_id": ["u1"]}))
    with pytest.raises(ValueError, match="track_id"):
        features.get_historical_features(lake, pa.table({"user_id": ["u1"], "event_timestamp": [HOUR]}),
                                         ["track_features"])


def test_enrichment_off_aggregates_still_count_and_lose_only_context(lake):
    interactions(lake, SESSION)
    from ingest_platform.processing.catalog import GENRE_HOURLY_TRENDS

    stats = aggregates.build_hourly(TRACK_HOURLY_STATS, lake, HOUR, enrichment_enabled=False).table
    assert {r["track_id"]: r["plays"] for r in stats.to_pylist()} == {"t1": 2, "t2": 1, "t3": 1}
    genres = aggregates.build_hourly(GENRE_HOURLY_TRENDS, lake, HOUR, enrichment_enabled=False).table.to_pylist()
    assert [(g["genre"], g["plays"], g["play_share"]) for g in genres] == [("unknown", 4, 1.0)]
    daily = aggregates.build_user_daily_engagement(lake, HOUR, enrichment_enabled=False).table.to_pylist()
    u1 = next(r for r in daily if r["user_id"] == "u1")
    assert (u1["plays"], u1["skips"], u1["listened_seconds"], u1["mean_completion_ratio"]) == (3, 1, None, None)


def test_late_event_hours_found_from_the_watermark(lake):
    interactions(lake, [("a", "u1", "s1", "t1", "play", "2026-11-26 10:15:00")], name="a.parquet")
    late = interactions(lake, [("b", "u1", "s1", "t1", "play", "2026-11-26 08:15:00")], name="late.parquet",
                        arrival=at("2026-11-26 10:20:00"))
    assert late.parent.name == "hour=10"
    hours, watermark = aggregates.late_event_hours(lake, at("2026-11-26 10:00:00"), enrichment_enabled=False)
    assert [(h.event_hour, h.events) for h in hours] == [(at("2026-11-26 08:00:00"), 1)]
    assert watermark == at("2026-11-26 10:20:00")
    assert aggregates.late_event_hours(lake, watermark, False) == ([], watermark)
    assert watermark - timedelta(minutes=5) == at("2026-11-26 10:15:00")
