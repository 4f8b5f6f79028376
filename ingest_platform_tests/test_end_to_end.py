"""The walking skeleton: HTTP -> Redis Streams -> drain sensor -> Parquet -> DuckDB."""

from __future__ import annotations

from datetime import datetime, timezone

import dagster as dg
import duckdb
import httpx
from typer.testing import CliRunner

from ingest_platform.cli import app
from ingest_platform.defs.definitions import defs
from ingest_platform.defs.ingestion.assets import warehouse_views
from ingest_platform.defs.ingestion.sensors import drain_event_streams
from ingest_platform.defs.resources import resources_from_settings
from ingest_platform.settings import get_settings

EVENT = {"user_interaction": {"user_id": "u1", "session_id": "s1", "track_id": "t1", "action": "play",
                              "timestamp": "2026-11-26T11:00:00+01:00"}}


def test_event_posted_over_http_is_queryable_in_duckdb(gateway, api_key, platform_env):
    response = httpx.post(f"{gateway.url}/v1/events", json=EVENT, headers={"Authorization": f"Bearer {api_key}"})
    assert response.status_code == 202, response.text
    event_id = response.json()["results"][0]["event_id"]

    resources = resources_from_settings(get_settings())
    with dg.instance_for_test() as instance, dg.build_sensor_context(instance=instance, resources=resources) as context:
        result = drain_event_streams(context)
        landed = [e for e in result.asset_events if isinstance(e, dg.AssetMaterialization)
                  and e.asset_key == dg.AssetKey("user_interactions")]
        assert len(landed) == 1 and landed[0].metadata["dagster/row_count"].value == 1
        assert dg.materialize([warehouse_views], resources=resources, instance=instance).success

    con = duckdb.connect(str(platform_env / "warehouse.duckdb"), read_only=True)
    rows = con.execute(
        "SELECT event_id, user_id, session_id, track_id, action, timestamp, api_key_id FROM user_interactions"
    ).fetchall()
    con.close()
    assert rows == [(event_id, "u1", "s1", "t1", "play", datetime(2026, 11, 26, 10, tzinfo=timezone.utc),
                     api_key.split("_")[1])]

    printed = CliRunner().invoke(app, ["sql", "--format", "csv", "select count(*) as n from user_interactions"])
    assert printed.exit_code == 0, printed.output
    assert printed.output == "n\n1\n"


def test_definitions_load_with_sensor_running_by_default():
    sensor = defs.get_sensor_def("drain_event_streams")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    keys = {k.to_user_string() for k in defs.resolve_all_asset_keys()}
    assert {"user_interactions", "feedback_events", "dead_letter_events", "warehouse_views"} <= keys
