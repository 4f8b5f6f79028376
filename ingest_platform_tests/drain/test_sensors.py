"""The Dagster shell of the drain: sensor ticks, schedule path, maintenance, lag, freshness."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import dagster as dg
import duckdb
import redis.asyncio as aioredis

from ingest_platform.contract import EVENT_TYPES
from ingest_platform.defs.ingestion.assets import landed_event_specs
from ingest_platform.defs.ingestion.sensors import drain_event_streams, drain_event_streams_job, maintain_lake_sensor
from ingest_platform.defs.resources import resources_from_settings
from ingest_platform.settings import get_settings
from ingest_platform.storage.event_log import consumer_lag_async
from ingest_platform.storage.lake import COMPACTED_PREFIX, dataset_files
from ingest_platform_tests.drain.helpers import STREAM, append, append_batches, hour_ms, interaction
from ingest_platform_tests.drain.test_faults import assert_exactly


def tick(sensor, instance, resources):
    with dg.build_sensor_context(instance=instance, resources=resources) as context:
        return sensor(context)


def test_sensor_tick_lands_and_reports_hour_materialisations_with_metadata(platform_env, redis_client):
    acknowledged = append_batches(redis_client, "s", entries=4, per_entry=5, id_ms=hour_ms(hour=10))
    append(redis_client, [interaction("s-0-0"), interaction("late")], entry_id=f"{hour_ms(hour=11)}-0")
    resources = resources_from_settings(get_settings())
    with dg.instance_for_test() as instance:
        result = tick(drain_event_streams, instance, resources)
    landed = [e for e in result.asset_events if isinstance(e, dg.AssetMaterialization)
              and e.asset_key == dg.AssetKey("user_interactions")]
    assert [e.partition for e in landed] == ["2026-11-26-10:00", "2026-11-26-11:00"]
    first = landed[0].metadata
    assert first["dagster/row_count"].value == 20
    assert first["range"].value == f"{hour_ms(hour=10)}-0..{hour_ms(hour=10) + 3}-0"
    assert first["bytes"].value > 0 and first["lag_seconds"].value > 0
    assert first["consumer_lag_entries"].value == 0 and first["consumer_lag_seconds"].value == 0
    assert landed[1].metadata["duplicates_dropped"].value == 1
    assert json.loads(result.cursor)[STREAM] == f"{hour_ms(hour=11)}-0"
    con = duckdb.connect(str(get_settings().warehouse_path), read_only=True)
    assert con.execute("SELECT count(*) FROM user_interactions").fetchone() == (21,)  # visible at once
    con.close()
    assert_exactly(get_settings().lake_dir, [*acknowledged, "late"])


def test_realtime_off_schedule_job_drains_everything(platform_env, redis_client, monkeypatch):
    monkeypatch.setenv("ENABLE_REALTIME_PROCESSING", "false")
    get_settings.cache_clear()
    acknowledged = append_batches(redis_client, "j", entries=30, per_entry=3)
    monkeypatch.setenv("DRAIN_MAX_ENTRIES", "7")  # one run drains at most 7 entries per stream
    get_settings.cache_clear()
    resources = resources_from_settings(get_settings())
    with dg.instance_for_test() as instance:
        for _ in range(5):  # five schedule ticks of at most 7 entries each
            result = drain_event_streams_job.execute_in_process(instance=instance, resources=resources)
            assert result.success
        materialised = instance.fetch_materializations(dg.AssetKey("user_interactions"), limit=100).records
    assert len(materialised) == 5
    assert_exactly(get_settings().lake_dir, acknowledged)


def test_flags_and_intervals_are_read_from_settings():
    code = ("from ingest_platform.defs.ingestion import sensors as s;"
            "print(s.drain_event_streams.minimum_interval_seconds, s.drain_event_streams.default_status.value,"
            " s.drain_schedule.cron_schedule, s.drain_schedule.default_status.value)")
    env = {**os.environ, "ENABLE_REALTIME_PROCESSING": "false", "DRAIN_INTERVAL_SECONDS": "2",
           "DRAIN_SCHEDULE_MINUTES": "10"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["2", "STOPPED", "*/10", "*", "*", "*", "*", "RUNNING"]


def test_landed_assets_carry_a_freshness_policy():
    for spec in landed_event_specs:
        policy = spec.freshness_policy
        assert policy is not None and policy.fail_window.to_timedelta().total_seconds() >= 300


def test_maintenance_sensor_compacts_closed_hours_and_trims(platform_env, redis_client, monkeypatch):
    monkeypatch.setenv("COMPACTION_GRACE_MINUTES", "0")
    monkeypatch.setenv("DRAIN_RETENTION_HOURS", "1")
    get_settings.cache_clear()
    acknowledged = append_batches(redis_client, "m", entries=6, per_entry=4, id_ms=hour_ms(hour=10))
    resources = resources_from_settings(get_settings())
    monkeypatch.setenv("DRAIN_MAX_ENTRIES", "2")
    get_settings.cache_clear()
    with dg.instance_for_test() as instance:
        for _ in range(3):
            tick(drain_event_streams, instance, resources)
        assert len(dataset_files(get_settings().lake_dir, "user_interactions")) == 3
        result = tick(maintain_lake_sensor, instance, resources)
    compacted = [e for e in result.asset_events if e.asset_key == dg.AssetKey("user_interactions")]
    assert len(compacted) == 1 and compacted[0].metadata["files_before"].value == 3
    files = dataset_files(get_settings().lake_dir, "user_interactions")
    assert len(files) == 1 and files[0].name.startswith(COMPACTED_PREFIX)
    assert redis_client.xlen(STREAM) == 1  # older than retention and drained: trimmed but the cursor entry
    assert_exactly(get_settings().lake_dir, acknowledged)


def test_consumer_lag_for_the_gateway_gauge(redis_server, redis_client):
    append_batches(redis_client, "l", entries=3, per_entry=1, id_ms=hour_ms(hour=10))

    async def read():
        client = aioredis.Redis.from_url(redis_server.url)
        try:
            return await consumer_lag_async(client, [t.stream for t in EVENT_TYPES.values()])
        finally:
            await client.aclose()

    lags = {lag.stream: lag for lag in asyncio.run(read())}
    assert lags[STREAM].entries == 3 and lags[STREAM].seconds > 3600
    other = next(t.stream for t in EVENT_TYPES.values() if t.stream != STREAM)
    assert (lags[other].entries, lags[other].seconds) == (0, 0.0)
