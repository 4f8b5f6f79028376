"""The Dagster side: declared checks, on-demand evaluation, and the replay job with config."""

from __future__ import annotations

import dagster as dg

from ingest_platform.defs.definitions import defs
from ingest_platform.defs.quality.checks import data_quality_checks
from ingest_platform.defs.quality.replay import replay_dead_letters_job
from ingest_platform.defs.resources import resources_from_settings
from ingest_platform.dlq.replay import replay_outcomes
from ingest_platform.settings import get_settings
from ingest_platform.storage.event_log import DrainLog

from .helpers import enqueue, interaction, run_drain_sensor


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
