"""The online store, the gateway's feature routes and the features CLI, against real Redis."""

from __future__ import annotations

from datetime import datetime, timezone

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
from typer.testing import CliRunner

from ingest_platform.cli import app
from ingest_platform.processing import features, online
from ingest_platform.storage import api_keys
from ingest_platform_tests.downstream.lake_data import at, interactions

NOW = datetime(2026, 11, 26, 12, 30, tzinfo=timezone.utc)


def push(lake, redis_client, now=NOW) -> int:
    features.materialize_feature_views(lake)
    return online.push_latest(redis_client, features.USER_VIEW, features.latest_rows(lake, features.USER_VIEW, now), now)


def test_online_value_follows_an_update(platform_env, redis_client):
    lake = platform_env / "lake"
    interactions(lake, [("a", "u1", "s1", "t1", "play", "2026-11-26 11:10:00")], name="a.parquet")
    assert push(lake, redis_client) == 1
    first = online.read_online(redis_client, "user_features", "u1")
    # At 12:30 the latest complete hour is 11:00-12:00, which holds the play.
    assert (first.features["user_plays_1h"], first.features["user_plays_24h"]) == (1, 1)
    assert (first.feature_timestamp, first.as_of) == ("2026-11-26T12:00:00.000000Z", "2026-11-26T12:00:00.000000Z")

    interactions(lake, [("b", "u1", "s1", "t1", "play", "2026-11-26 12:10:00"),
                        ("c", "u1", "s1", "t1", "skip", "2026-11-26 12:11:00")], name="b.parquet")
    push(lake, redis_client)
    second = online.read_online(redis_client, "user_features", "u1")
    # The hour in progress counts; its row ends at 13:00, so as-of is the materialisation time.
    # Its 1 h window is that hour so far; the 11:10 play is still in the 24 h window.
    assert (second.features["user_plays_1h"], second.features["user_skips_1h"], second.features["user_plays_24h"]) \
        == (1, 1, 2)
    assert second.feature_timestamp == "2026-11-26T13:00:00.000000Z"
    assert second.as_of == "2026-11-26T12:30:00.000000Z"
    assert online.read_online(redis_client, "user_features", "nobody") is None


def test_gateway_serves_online_features_to_keys_with_the_read_scope(gateway, platform_env, redis_client):
    lake = platform_env / "lake"
    interactions(lake, [("a", "u1", "s1", "t7", "play", "2026-11-26 11:10:00")])
    features.materialize_feature_views(lake)
    now = at("2026-11-26 11:30:00")
    for view in (features.USER_VIEW, features.TRACK_VIEW):
        online.push_latest(redis_client, view, features.latest_rows(lake, view, now), now)
    reader, _ = api_keys.create_key(redis_client, "model-server", ["features:read"])
    writer, _ = api_keys.create_key(redis_client, "app", ["user_interaction"])

    response = httpx.get(f"{gateway.url}/v1/features/users/u1", headers={"Authorization": f"Bearer {reader}"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["entity"], body["id"], body["feature_view"]) == ("user", "u1", "user_features")
    assert body["features"]["user_plays_1h"] == 1 and body["as_of"] == "2026-11-26T11:30:00.000000Z"
    assert body["feature_timestamp"] == "2026-11-26T12:00:00.000000Z"
    track = httpx.get(f"{gateway.url}/v1/features/tracks/t7", headers={"Authorization": f"Bearer {reader}"})
    assert track.status_code == 200 and track.json()["features"]["track_plays_24h"] == 1

    missing = httpx.get(f"{gateway.url}/v1/features/users/u404", headers={"Authorization": f"Bearer {reader}"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    forbidden = httpx.get(f"{gateway.url}/v1/features/users/u1", headers={"Authorization": f"Bearer {writer}"})
    assert forbidden.status_code == 403
    assert httpx.get(f"{gateway.url}/v1/features/users/u1").status_code == 401


def test_cli_point_in_time_training_set(platform_env, tmp_path):
    lake = platform_env / "lake"
    interactions(lake, [("a", "u1", "s1", "t1", "play", "2026-11-26 10:10:00")], name="a.parquet")
    interactions(lake, [("b", "u1", "s1", "t1", "play", "2026-11-26 11:10:00")], name="b.parquet")
    runner = CliRunner()
    materialized = runner.invoke(app, ["features", "materialize", "--no-online"])
    assert materialized.exit_code == 0, materialized.output
    assert "user_features: " in materialized.output
    labels = tmp_path / "labels.parquet"
    pq.write_table(pa.table({"user_id": ["u1", "u1"], "track_id": ["t1", "t1"],
                             "event_timestamp": pa.array([at("2026-11-26 11:30:00"), at("2026-11-26 12:00:00")],
                                                         pa.timestamp("us", tz="UTC"))}), labels)
    out = tmp_path / "train.parquet"
    result = runner.invoke(app, ["features", "get-historical", "--labels", str(labels), "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = pq.read_table(out).to_pylist()
    assert [(r["user_plays_24h"], r["affinity_plays_24h"]) for r in rows] == [(1, 1), (2, 2)]
    bad = runner.invoke(app, ["features", "get-historical", "--labels", str(labels), "--out", str(out),
                              "--view", "no_such_view"])
    assert bad.exit_code == 2
