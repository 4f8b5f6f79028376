"""The downstream assets materialised by Dagster in-process, the warehouse they leave behind, a
reader holding warehouse.duckdb open throughout, the flag off, and the definitions' shape."""

from __future__ import annotations

import threading

import dagster as dg
import duckdb
import pytest

from ingest_platform.defs.analytics.assets import analytics_assets, user_daily_engagement
from ingest_platform.defs.definitions import defs
from ingest_platform.defs.enrichment.assets import enrichment_assets
from ingest_platform.defs.features.assets import feature_assets
from ingest_platform.defs.reference.assets import reference_assets
from ingest_platform.defs.resources import resources_from_settings
from ingest_platform.processing.catalog import DERIVED_DATASETS
from ingest_platform.settings import get_settings
from ingest_platform.storage.warehouse import refresh_warehouse
from ingest_platform_tests.downstream.lake_data import interactions, reference
from ingest_platform_tests.downstream.test_numbers import SESSION

HOUR_KEY = "2026-11-26-10:00"
HOURLY = [*enrichment_assets, *[a for a in analytics_assets if a is not user_daily_engagement]]


def materialize_all(instance) -> list[dg.ExecuteInProcessResult]:
    resources = resources_from_settings(get_settings())
    results = [dg.materialize(reference_assets, resources=resources, instance=instance)]
    results.append(dg.materialize(enrichment_assets, partition_key=HOUR_KEY, resources=resources, instance=instance))
    results.append(dg.materialize(HOURLY[2:], partition_key=HOUR_KEY, resources=resources, instance=instance))
    results.append(dg.materialize([user_daily_engagement], partition_key="2026-11-26", resources=resources,
                                  instance=instance))
    results.append(dg.materialize(feature_assets, resources=resources, instance=instance))
    return results


def metadata(result: dg.ExecuteInProcessResult, key: str) -> dict:
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(key)]
    return {k: v.value for k, v in event.materialization.metadata.items()}


@pytest.fixture
def landed(platform_env):
    reference(platform_env)
    interactions(platform_env / "lake", SESSION)
    return platform_env


def test_materialised_downstream_is_in_the_warehouse_with_metadata(landed):
    with dg.instance_for_test() as instance:
        results = materialize_all(instance)
    assert all(r.success for r in results)
    enriched = metadata(results[1], "enriched_user_interactions")
    assert enriched["dagster/row_count"] == 7
    assert enriched["user_miss_rate"] == round(1 / 7, 6) and enriched["track_miss_rate"] == round(1 / 7, 6)
    assert [c.name for c in enriched["dagster/column_schema"].columns][:2] == ["event_id", "user_id"]
    assert "| event_id |" in enriched["preview"]
    assert metadata(results[4], "user_features")["online_entities_pushed"] == 3

    with duckdb.connect(str(landed / "warehouse.duckdb"), read_only=True) as con:
        views = dict(con.execute("SELECT table_name, table_type FROM information_schema.tables").fetchall())
        # No feedback landed: its enriched dataset is an empty typed table until its first file.
        assert views.pop("enriched_feedback_events") == "BASE TABLE"
        assert all(views.get(d.name) == "VIEW" for d in DERIVED_DATASETS if d.name in views), views
        assert con.execute("SELECT plays, skips, skip_rate FROM track_hourly_stats WHERE track_id = 't2'").fetchall() \
            == [(1, 1, 1.0)]
        assert con.execute("SELECT count(*) FROM enriched_user_interactions WHERE hour = 10").fetchone() == (7,)
        assert con.execute("SELECT plays FROM user_daily_engagement WHERE user_id = 'u1'").fetchone() == (3,)


def test_enrichment_flag_off_writes_nothing_and_aggregates_still_work(landed, monkeypatch):
    monkeypatch.setenv("ENABLE_EVENT_ENRICHMENT", "false")
    get_settings.cache_clear()
    with dg.instance_for_test() as instance:
        results = materialize_all(instance)
    assert all(r.success for r in results)
    assert metadata(results[1], "enriched_user_interactions")["enrichment"] == "disabled"
    assert not (landed / "lake" / "enriched_user_interactions").exists()
    assert "enrichment off" in metadata(results[2], "genre_hourly_trends")["source"]
    with duckdb.connect(str(landed / "warehouse.duckdb"), read_only=True) as con:
        assert con.execute("SELECT genre, plays FROM genre_hourly_trends").fetchall() == [("unknown", 4)]
        assert con.execute("SELECT sum(plays) FROM track_hourly_stats").fetchone() == (4,)
        # The enriched view exists, empty, with its columns, so analysts' queries still bind.
        assert con.execute("SELECT count(*) FROM enriched_user_interactions").fetchone() == (0,)


def test_a_read_only_reader_queries_throughout_materialisations(landed):
    refresh_warehouse(landed / "warehouse.duckdb", landed / "lake")
    reader = duckdb.connect(str(landed / "warehouse.duckdb"), read_only=True)
    stop, answers, errors = threading.Event(), [], []

    def keep_querying():
        while not stop.is_set():
            try:
                answers.append(reader.execute("SELECT count(*) FROM user_interactions").fetchone()[0])
                # A reader arriving mid-run gets whichever warehouse file is in place, never a lock.
                with duckdb.connect(str(landed / "warehouse.duckdb"), read_only=True) as late_reader:
                    answers.append(late_reader.execute("SELECT count(*) FROM track_hourly_stats "
                                                       "WHERE track_id = 'zzz'").fetchone()[0] + 7)
            except Exception as exc:  # any failure is the test's failure
                errors.append(exc)
            stop.wait(0.02)  # leave the CPU to the runs on this 2-core machine

    thread = threading.Thread(target=keep_querying)
    thread.start()
    try:
        with dg.instance_for_test() as instance:
            results = materialize_all(instance)
            results += materialize_all(instance)  # rebuilds replace files under the reader
    finally:
        stop.set()
        thread.join()
    reader.close()
    assert all(r.success for r in results)
    assert errors == [] and answers and set(answers) == {7}
    with duckdb.connect(str(landed / "warehouse.duckdb"), read_only=True) as fresh:  # the swapped-in file
        assert fresh.execute("SELECT count(*) FROM user_features").fetchone()[0] > 0


def test_definitions_group_describe_and_automate_downstream_assets():
    graph = defs.resolve_asset_graph()
    groups = {}
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        groups.setdefault(node.group_name, set()).add(key.to_user_string())
    assert {"users", "tracks", "recommendations", "enriched_user_interactions", "enriched_feedback_events"} \
        <= groups["enrichment"]
    assert {"track_hourly_stats", "user_daily_engagement", "recommendation_feedback_stats",
            "genre_hourly_trends"} <= groups["analytics"]
    assert {"user_features", "track_features", "user_track_affinity"} <= groups["features"]
    for name in ("enriched_user_interactions", "track_hourly_stats", "user_features"):
        node = graph.get(dg.AssetKey(name))
        assert node.description and "duckdb" in node.kinds
        assert "dagster/column_schema" in node.metadata
        label = node.automation_condition.get_label()
        assert label and "*/5 * * * *" in label  # bounded cadence, not eager()
    sensor = defs.get_sensor_def("downstream_automation")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert defs.get_sensor_def("late_events").default_status == dg.DefaultSensorStatus.RUNNING


def test_late_events_sensor_requests_exactly_the_late_hour_and_day(platform_env):
    from ingest_platform.defs.analytics.sensors import late_events
    from ingest_platform.processing.enrichment import enrich_user_interactions
    from ingest_platform_tests.downstream.lake_data import at

    lake = platform_env / "lake"
    interactions(lake, [("on-time", "u1", "s1", "t1", "play", "2026-11-26 10:15:00"),
                        ("late", "u1", "s0", "t1", "play", "2026-11-26 08:15:00")], arrival=at("2026-11-26 10:20:00"))
    enrich_user_interactions(lake, at("2026-11-26 10:00:00"))
    resources = resources_from_settings(get_settings())
    with dg.instance_for_test() as instance, dg.build_sensor_context(
            instance=instance, resources=resources, cursor="2026-11-26T10:00:00+00:00") as context:
        result = late_events(context)
        assert [(r.job_name, r.partition_key) for r in result.run_requests] == [
            ("rebuild_late_hours", "2026-11-26-08:00"), ("rebuild_late_days", "2026-11-26")]
        assert result.cursor == "2026-11-26T10:20:00+00:00"
    with dg.instance_for_test() as instance, dg.build_sensor_context(
            instance=instance, resources=resources, cursor=result.cursor) as context:
        assert late_events(context).run_requests == []  # nothing new since the watermark
