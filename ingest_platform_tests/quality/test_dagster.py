"""The Dagster side: declared checks, on-demand evaluation, backfills of an hour with their checks,
thresholds from settings, and the replay job with config."""

from __future__ import annotations

import shutil
from datetime import timedelta

import dagster as dg
import duckdb

from ingest_platform.defs.definitions import defs
from ingest_platform.defs.ingestion.assets import landed_events
from ingest_platform.defs.quality.checks import data_quality_checks, quality_check_specs
from ingest_platform.defs.quality.replay import replay_dead_letters_job
from ingest_platform.defs.resources import resources_from_settings
from ingest_platform.dlq.replay import AWAITING_DRAIN_KEY, replay_outcomes
from ingest_platform.settings import get_settings
from ingest_platform.storage.event_log import DrainLog

from .helpers import check_results, enqueue, feedback, interaction, run_drain_sensor
from .materialising import (HOUR_10, HOUR_10_KEY, enqueue_at, forget_landed_data, materialise_hour,
                            recorded_evaluation, run_evaluations)


def test_checks_are_declared_on_every_event_asset():
    checks = {(k.asset_key.to_user_string(), k.name) for k in defs.resolve_asset_graph().asset_check_keys}
    for dataset in ("user_interactions", "feedback_events"):
        for name in ("ids_well_formed", "event_ids_unique", "values_in_enum", "timestamps_sane",
                     "dead_letter_rate", "lake_files_match_contract"):
            assert (dataset, name) in checks
    assert ("feedback_events", "rating_in_range") in checks
    assert ("user_interactions", "rating_in_range") not in checks
    assert ("dead_letter_events", "letters_have_reasons") in checks
    assert defs.get_job_def("replay_dead_letters_job")


def test_checks_run_on_demand_over_the_latest_hour(platform_env, redis_client):
    enqueue(redis_client, [interaction(track_id=f"t{i}") for i in range(9)] + [interaction(action="Stop")])
    run_drain_sensor()
    checks_job = dg.define_asset_job("run_quality_checks", selection=dg.AssetSelection.checks(data_quality_checks))
    job = dg.Definitions(asset_checks=[data_quality_checks], jobs=[checks_job],
                         resources=resources_from_settings(get_settings())).resolve_job_def("run_quality_checks")
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(instance=instance)
        assert result.success
        evaluations = {(e.asset_key.to_user_string(), e.check_name): e
                       for e in result.get_asset_check_evaluations()}
    rate = evaluations[("user_interactions", "dead_letter_rate")]
    assert not rate.passed and rate.severity == dg.AssetCheckSeverity.WARN  # 10%: warns, not above 10%
    assert not evaluations[("user_interactions", "values_in_enum")].passed
    assert evaluations[("feedback_events", "dead_letter_rate")].passed  # no data yet


def test_replay_job_with_config(platform_env, redis_client):
    enqueue(redis_client, [interaction(action="Skip", track_id="a"), interaction(action="pause", track_id="b")])
    run_drain_sensor()
    with dg.instance_for_test() as instance:
        result = replay_dead_letters_job.execute_in_process(
            run_config={"ops": {"replay_dead_letters_op": {"config": {
                "event_type": "user_interaction", "check": "action_in_enum", "fix": "lowercase_action",
                "wait_seconds": 0}}}},
            resources=resources_from_settings(get_settings()), instance=instance)
    assert result.success
    output = next(e for e in result.all_node_events if e.is_successful_output)
    metadata = output.step_output_data.metadata
    assert metadata["re_injected"].value == 1 and metadata["awaiting_drain"].value == 1
    run_drain_sensor()
    settings = get_settings()
    outcome = replay_outcomes(settings.warehouse_path, settings.lake_dir, metadata["replay_id"].value,
                              DrainLog(redis_client))
    assert outcome.counts == {"succeeded": 1}


def test_sensor_check_results_are_recorded_by_the_instance(platform_env, redis_client):
    """What the daemon does with the sensor's asset events: they land as check executions the UI shows."""
    enqueue(redis_client, [interaction(track_id="a"), interaction(action="PLAY!", track_id="b")])
    with dg.instance_for_test() as instance:
        result = run_drain_sensor(instance)
        for event in result.asset_events:
            instance.report_runless_asset_event(event)
        key = dg.AssetCheckKey(dg.AssetKey("user_interactions"), "dead_letter_rate")
        latest = instance.event_log_storage.get_latest_asset_check_execution_by_key([key])[key]
        evaluation = latest.event.dagster_event.event_specific_data
        assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR  # 50%
        observed = instance.fetch_observations(dg.AssetKey("dead_letter_events"), limit=5).records
        assert observed[0].asset_observation.metadata["by_check"].value == {"action_in_enum": 1}
        landed = instance.fetch_materializations(dg.AssetKey("dead_letter_events"), limit=5).records
        rejected_by = landed[0].asset_materialization.metadata["rejected_by"].value
    with duckdb.connect(str(get_settings().warehouse_path), read_only=True) as con:  # letter -> its tick
        assert con.execute("SELECT rejected_by FROM dead_letter_events").fetchall() == [(rejected_by,)]


def test_backfilling_an_hour_checks_that_hour(platform_env, redis_client):
    """Hour 10 has 1 dead letter in 2 events, hour 11 is clean. Its files lost, hour 10 is
    materialised again: `landed_events` reports the checks of what it re-landed, and
    `data_quality_checks` in the same run measures hour 10, not the latest hour."""
    enqueue_at(redis_client, [interaction(track_id="a"), interaction(action="x", track_id="b")], HOUR_10)
    enqueue_at(redis_client, [interaction(track_id="c")], HOUR_10 + timedelta(hours=1))
    run_drain_sensor()
    lake = get_settings().lake_dir
    for dataset in ("user_interactions", "dead_letter_events"):
        shutil.rmtree(lake / dataset / "date=2026-11-26" / "hour=10")
    with dg.instance_for_test() as instance:
        alone = materialise_hour(instance, HOUR_10_KEY, with_checks=False)
        record, recorded = recorded_evaluation(instance, "user_interactions", "dead_letter_rate")
        assert record.run_id == alone.run_id and not recorded.passed
        assert recorded.severity == dg.AssetCheckSeverity.ERROR  # 50% > 10%
        assert recorded.metadata["batch"].value == "ingest:events:user_interaction replayed for hour 2026-11-26 10:00"
        assert (recorded.metadata["dead_letters"].value, recorded.metadata["valid_rows"].value) == (1, 1)
        letters = next(m for m in alone.asset_materializations_for_node("landed_events")
                       if m.asset_key == dg.AssetKey("dead_letter_events"))
        assert letters.metadata["dagster/row_count"].value == 1
        assert letters.metadata["by_check"].value == {"action_in_enum": 1}
        assert letters.metadata["by_event_type"].value == {"user_interaction": 1}

        shutil.rmtree(lake)  # lost again; now the backfill runs the checks too
        backfill = materialise_hour(instance, HOUR_10_KEY)
        assert backfill.success
        landed_then_hour = run_evaluations(backfill, "user_interactions", "dead_letter_rate")
        assert [e.metadata["batch"].value for e in landed_then_hour] == [
            "ingest:events:user_interaction replayed for hour 2026-11-26 10:00", "lake hour 2026-11-26 10:00"]
        for evaluation in landed_then_hour:
            assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
            assert evaluation.metadata["dead_letter_rate"].value == 0.5
        assert not run_evaluations(backfill, "user_interactions", "values_in_enum")[-1].passed
        record, recorded = recorded_evaluation(instance, "user_interactions", "dead_letter_rate")
        assert record.run_id == backfill.run_id and recorded.metadata["batch"].value == "lake hour 2026-11-26 10:00"

        clean = materialise_hour(instance, "2026-11-26-11:00")  # re-lands hour 11 (the lake was lost)
        rates = run_evaluations(clean, "user_interactions", "dead_letter_rate")
        assert [r.passed for r in rates] == [True, True] and rates[-1].metadata["valid_rows"].value == 1
        assert rates[-1].metadata["batch"].value == "lake hour 2026-11-26 11:00"
        again = materialise_hour(instance, "2026-11-26-11:00")  # nothing missing: only the hour's checks
        assert [r.metadata["batch"].value for r in run_evaluations(again, "user_interactions", "dead_letter_rate")
                ] == ["lake hour 2026-11-26 11:00"]


def test_dead_letter_thresholds_come_from_settings(platform_env, redis_client, monkeypatch):
    """1 dead letter in 33 events (3%): a warning by default, a failure with DEAD_LETTER_RATE_FAIL=0.02."""
    events = [interaction(track_id=f"t{i}") for i in range(32)] + [interaction(action="x", track_id="bad")]
    enqueue_at(redis_client, events)
    rate = check_results(run_drain_sensor())[("user_interactions", "dead_letter_rate")][0]
    assert not rate.passed and rate.severity == dg.AssetCheckSeverity.WARN

    monkeypatch.setenv("DEAD_LETTER_RATE_WARN", "0.005")
    monkeypatch.setenv("DEAD_LETTER_RATE_FAIL", "0.02")
    get_settings.cache_clear()
    with dg.instance_for_test() as instance:
        materialise_hour(instance)
        _, recorded = recorded_evaluation(instance, "user_interactions", "dead_letter_rate")
    assert not recorded.passed and recorded.severity == dg.AssetCheckSeverity.ERROR
    assert (recorded.metadata["warn_above"].value, recorded.metadata["fail_above"].value) == (0.005, 0.02)
    assert round(recorded.metadata["dead_letter_rate"].value, 4) == 0.0303
    spec = next(s for s in quality_check_specs()
                if s.key == dg.AssetCheckKey(dg.AssetKey("user_interactions"), "dead_letter_rate"))
    assert "warns above DEAD_LETTER_RATE_WARN (0.5%), fails above DEAD_LETTER_RATE_FAIL (2%)" in spec.description


def test_backfill_with_dlq_handling_off_lands_the_valid_streams_then_fails(platform_env, redis_client, monkeypatch):
    enqueue_at(redis_client, [interaction(action="nope"), feedback(recommendation_id="ok")])
    run_drain_sensor()  # flag on: both ranges commit (the letter lands)
    forget_landed_data()
    monkeypatch.setenv("ENABLE_DLQ_HANDLING", "false")
    get_settings.cache_clear()
    with dg.instance_for_test() as instance:
        result = dg.materialize([landed_events], partition_key=HOUR_10_KEY, instance=instance,
                                resources=resources_from_settings(get_settings()), raise_on_error=False)
        assert not result.success
        cause = result.failure_data_for_node("landed_events").error.cause
        assert cause.cls_name == "InvalidRowsError" and "ENABLE_DLQ_HANDLING is off" in cause.message
        landed = {m.asset_key.to_user_string(): m.metadata["dagster/row_count"].value
                  for m in result.asset_materializations_for_node("landed_events")}
    assert landed == {"user_interactions": 0, "feedback_events": 1, "dead_letter_events": 0}
    with duckdb.connect(str(get_settings().warehouse_path), read_only=True) as con:
        assert con.execute("SELECT recommendation_id FROM feedback_events").fetchall() == [("ok",)]
        assert con.execute("SELECT count(*) FROM dead_letter_events").fetchall() == [(0,)]


def test_a_failing_replay_settle_still_reports_the_tick(platform_env, redis_client, capfd):
    """The drained ranges are committed before the settle runs: if the settle failing failed the
    tick, their materialisations would never be reported. It logs a warning instead and leaves the
    note for the next tick."""
    redis_client.hset(AWAITING_DRAIN_KEY, "replay-broken", "not json")
    enqueue(redis_client, [interaction(), interaction(action="Stop", track_id="t2")])
    result = run_drain_sensor()
    materialised = {e.asset_key.to_user_string() for e in result.asset_events
                    if isinstance(e, dg.AssetMaterialization)}
    assert materialised == {"user_interactions", "dead_letter_events"}
    assert check_results(result)  # the tick's check results too
    # (the sensor context's log manager writes to stderr, not through the root logger)
    warnings = [line for line in capfd.readouterr().err.splitlines() if " - WARNING - " in line]
    assert any("settling drained dead-letter replays failed" in w and "JSONDecodeError" in w
               for w in warnings), warnings
    assert redis_client.hget(AWAITING_DRAIN_KEY, "replay-broken") == b"not json"  # for the next tick
