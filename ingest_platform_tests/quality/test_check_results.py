"""Every asset-check family with a failing and a passing example, through a real Redis and both
ways Dagster evaluates them: a drain sensor tick (its results recorded by the instance, as the
daemon does) and a materialisation of the hour partition (a backfill after the hour's files were
lost), with `landed_events` and `data_quality_checks` in one run."""

from __future__ import annotations

import dagster as dg
import pytest

from .helpers import feedback, interaction, run_drain_sensor
from .materialising import enqueue_at, forget_landed_data, materialise_hour, recorded_evaluation, run_evaluations

WARN, ERROR = dg.AssetCheckSeverity.WARN, dg.AssetCheckSeverity.ERROR
UI, FE = "user_interactions", "feedback_events"


def case(dataset, check, events, passes, severity=None, failing_rows=None, *, id):
    return pytest.param(dataset, check, events, passes, severity, failing_rows, id=id)


CASES = [
    case(UI, "ids_well_formed", [interaction(session_id="s 1")], False, WARN, 1, id="ids-fail-charset"),
    case(UI, "ids_well_formed", [interaction(track_id="t" * 129)], False, WARN, 1, id="ids-fail-length"),
    case(UI, "ids_well_formed", [interaction(user_id=None)], False, WARN, 1, id="ids-fail-required-null"),
    case(FE, "ids_well_formed", [feedback(recommendation_id="")], False, WARN, 1, id="ids-fail-empty-feedback"),
    case(UI, "ids_well_formed", [interaction(user_id="user-42@eu.example"), interaction(user_id="josé")], True,
         id="ids-pass"),
    case(UI, "values_in_enum", [interaction(action="PLAY!"), interaction(action="Skip", track_id="t2")], False,
         WARN, 2, id="enum-fail-action"),
    case(FE, "values_in_enum", [feedback(feedback_type="stars")], False, WARN, 1, id="enum-fail-feedback_type"),
    case(UI, "values_in_enum", [interaction(action=a, track_id=a) for a in ("play", "pause", "skip", "like")],
         True, id="enum-pass"),
    case(FE, "rating_in_range", [feedback(rating=6.0)], False, WARN, 1, id="rating-fail-explicit"),
    case(FE, "rating_in_range", [feedback(feedback_type="implicit", rating=1.5)], False, WARN, 1,
         id="rating-fail-implicit"),
    case(FE, "rating_in_range", [feedback(rating=1.0, recommendation_id="a"), feedback(rating=5.0),
                                 feedback(feedback_type="implicit", rating=0.0, recommendation_id="b")], True,
         id="rating-pass"),
    case(UI, "timestamps_sane", [interaction(timestamp="2026-11-26T10:05:01Z")], False, WARN, 1,
         id="timestamps-fail-ahead"),
    case(UI, "timestamps_sane", [interaction(timestamp="26/11/2026 10:00")], False, WARN, 1,
         id="timestamps-fail-unparseable"),
    case(FE, "timestamps_sane", [feedback(timestamp="2026-10-01T00:00:00Z")], False, WARN, 1,
         id="timestamps-fail-horizon"),
    case(UI, "timestamps_sane", [interaction(timestamp="2026-11-26T10:05:00Z"),
                                 interaction(timestamp="2026-10-28T10:00:00Z", track_id="t2")], True,
         id="timestamps-pass"),
    # An event_id reused with other content in one batch: the later one is a dead letter (an
    # identical retry, below, is dropped as a duplicate instead).
    case(UI, "event_ids_unique", [interaction(event_id="e1", action="play", track_id="t1"),
                                  interaction(event_id="e1", action="skip", track_id="t2")], False, WARN, 1,
         id="unique-fail-same-id-other-content"),
    case(UI, "event_ids_unique", [interaction(event_id="e1"), interaction(event_id="e2")], True,
         id="unique-pass"),
    case(UI, "event_ids_unique", [interaction(event_id="e1"), interaction(event_id="e1")], True,
         id="unique-pass-identical-retry-dropped"),
    case(UI, "dead_letter_rate", [interaction(), interaction(action="x", track_id="t2")], False, ERROR,
         id="rate-fail-50pct"),
    case(UI, "dead_letter_rate", [interaction(track_id=f"t{i}") for i in range(9)] + [interaction(action="x")],
         False, WARN, id="rate-warn-10pct"),
    case(UI, "dead_letter_rate", [interaction(track_id=f"t{i}") for i in range(100)] + [interaction(action="x")],
         True, id="rate-pass-0.99pct"),
]


def assert_verdict(evaluation: dg.AssetCheckEvaluation, passes: bool, severity, failing_rows) -> None:
    assert evaluation.passed is passes, dict(evaluation.metadata)
    if not passes:
        assert evaluation.severity == severity
    if failing_rows is not None:
        assert evaluation.metadata["rows_failing"].value == failing_rows


@pytest.mark.parametrize(("dataset", "check", "events", "passes", "severity", "failing_rows"), CASES)
def test_check_family(platform_env, redis_client, dataset, check, events, passes, severity, failing_rows):
    enqueue_at(redis_client, events)
    with dg.instance_for_test() as instance:
        tick = run_drain_sensor(instance)
        for event in tick.asset_events:  # what the daemon does with a sensor's asset events
            instance.report_runless_asset_event(event)
        record, recorded = recorded_evaluation(instance, dataset, check)
        assert record.run_id == ""  # runless: the sensor's
        assert_verdict(recorded, passes, severity, failing_rows)

        forget_landed_data()
        backfill = materialise_hour(instance)
        assert backfill.success
        evaluations = run_evaluations(backfill, dataset, check)
        assert len(evaluations) == 2  # landed_events' for what it re-landed, then the hour's
        for evaluation in evaluations:
            assert_verdict(evaluation, passes, severity, failing_rows)
        record, recorded = recorded_evaluation(instance, dataset, check)
        assert record.run_id == backfill.run_id
        assert_verdict(recorded, passes, severity, failing_rows)
