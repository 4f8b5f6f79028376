"""Mixed batches through a real Redis and the drain sensor: counts add up, asset checks report,
the DLQ is queryable; replays succeed, fail again, are idempotent; the DLQ flag off loses nothing."""

from __future__ import annotations

import dagster as dg
import duckdb
import pytest
from typer.testing import CliRunner

from ingest_platform.cli import app
from ingest_platform.contract import EVENT_TYPES
from ingest_platform.dlq.inspection import LetterFilter, dead_letter_stats, list_dead_letters
from ingest_platform.dlq.replay import replay_dead_letters, replay_outcomes
from ingest_platform.drain.micro_batch import InvalidRowsError
from ingest_platform.settings import get_settings
from ingest_platform.storage.event_log import DrainLog

from .helpers import check_results, enqueue, feedback, interaction, run_drain_sensor


def mixed_batch(valid: int, bad_actions: int, bad_ratings: int) -> list[dict]:
    events = [interaction(track_id=f"t{i}") for i in range(valid)]
    events += [interaction(action="PLAY!", track_id=f"bad{i}") for i in range(bad_actions)]
    events += [feedback(rating=9.0, recommendation_id=f"r{i}") for i in range(bad_ratings)]
    events += [feedback(recommendation_id=f"ok{i}") for i in range(valid // 10)]
    return events


def lake_counts(data) -> dict[str, int]:
    settings = get_settings()
    with duckdb.connect() as con:
        counts = {}
        for dataset in ("user_interactions", "feedback_events", "dead_letter_events"):
            files = list((settings.lake_dir / dataset).glob("*/*/*.parquet"))
            counts[dataset] = con.execute(
                f"SELECT count(*) FROM read_parquet({[str(f) for f in files]})").fetchone()[0] if files else 0
    return counts


def warehouse(sql: str, params=()) -> list[tuple]:
    with duckdb.connect(str(get_settings().warehouse_path), read_only=True) as con:
        return con.execute(sql, list(params)).fetchall()


def test_mixed_batch_counts_add_up_and_checks_report(platform_env, redis_client):
    events = mixed_batch(valid=200, bad_actions=30, bad_ratings=1)
    ids = enqueue(redis_client, events)
    result = run_drain_sensor()

    counts = lake_counts(platform_env)
    assert counts == {"user_interactions": 200, "feedback_events": 20, "dead_letter_events": 31}
    assert sum(counts.values()) == len(events) == len(set(ids))

    checks = check_results(result)
    # user_interactions: 30 of 230 (13%) are dead letters -> the rate check fails (ERROR)
    rate = checks[("user_interactions", "dead_letter_rate")][0]
    assert not rate.passed and rate.severity == dg.AssetCheckSeverity.ERROR
    assert rate.metadata["dead_letters"].value == 30
    enums = checks[("user_interactions", "values_in_enum")][0]
    assert not enums.passed and enums.severity == dg.AssetCheckSeverity.WARN
    assert enums.metadata["rows_failing"].value == 30
    assert checks[("user_interactions", "timestamps_sane")][0].passed
    assert checks[("user_interactions", "lake_files_match_contract")][0].passed
    # feedback_events: 1 of 21 (4.8%) -> warns
    rate = checks[("feedback_events", "dead_letter_rate")][0]
    assert not rate.passed and rate.severity == dg.AssetCheckSeverity.WARN
    assert not checks[("feedback_events", "rating_in_range")][0].passed
    assert all(e.passed for e in checks[("dead_letter_events", "letters_have_reasons")])
    observations = [e for e in result.asset_events if isinstance(e, dg.AssetObservation)]
    by_check = {o.metadata["event_type"].value: o.metadata["by_check"].value for o in observations}
    assert by_check == {"user_interaction": {"action_in_enum": 30}, "feedback_event": {"rating_in_range": 1}}

    # the warehouse view, with every column a dead letter promises
    rows = warehouse("SELECT event_type, replay_status, count(*) FROM dead_letter_events GROUP BY ALL ORDER BY 1")
    assert rows == [("feedback_event", "pending", 1), ("user_interaction", "pending", 30)]
    letter = warehouse("SELECT event_id, stream_id, received_at, raw_payload, failures, rejected_by "
                       "FROM dead_letter_events WHERE event_type = 'feedback_event'")[0]
    assert letter[0] in ids and "/" in letter[1] and letter[2] is not None
    assert '"rating":9.0' in letter[3] and letter[4][0]["check"] == "rating_in_range"
    assert letter[5].startswith(EVENT_TYPES["feedback_event"].stream)


def test_low_dead_letter_rate_passes(platform_env, redis_client):
    enqueue(redis_client, [interaction(track_id=f"t{i}") for i in range(200)] + [interaction(action="x")])
    checks = check_results(run_drain_sensor())
    assert checks[("user_interactions", "dead_letter_rate")][0].passed  # 1 of 201 < 1%


def test_dlq_stats_and_list(platform_env, redis_client):
    enqueue(redis_client, mixed_batch(valid=20, bad_actions=3, bad_ratings=2)
            + [interaction(timestamp="soon", track_id="x")])
    run_drain_sensor()
    settings = get_settings()
    stats = dead_letter_stats(settings.warehouse_path, settings.lake_dir)
    assert stats.total == 6
    assert ("action_in_enum", "action", 3) in stats.by_reason and ("rating_in_range", "rating", 2) in stats.by_reason
    columns, rows = list_dead_letters(settings.warehouse_path, settings.lake_dir,
                                      LetterFilter(event_type="user_interaction", check="timestamp_parseable"))
    assert len(rows) == 1 and "timestamp 'soon' is not an ISO 8601" in rows[0][columns.index("first_message")]

    runner = CliRunner()
    printed = runner.invoke(app, ["dlq", "stats"])
    assert printed.exit_code == 0, printed.output
    assert "6 dead letters" in printed.output and "action_in_enum" in printed.output
    printed = runner.invoke(app, ["dlq", "list", "--type", "feedback_event", "--status", "pending", "--limit", "1"])
    assert printed.exit_code == 0 and "1 dead letters" in printed.output
    printed = runner.invoke(app, ["dlq", "list", "--check", "id_length"])
    assert printed.exit_code == 0 and "no dead letters match" in printed.output


def test_replay_with_a_fix_succeeds_and_without_fails_again(platform_env, redis_client):
    ids = enqueue(redis_client, [interaction(track_id="good"), interaction(action="PLAY!", track_id="a"),
                                 interaction(action="SKIP!", track_id="b"), feedback(rating=7.0)])
    run_drain_sensor()
    settings = get_settings()
    lake, wh = settings.lake_dir, settings.warehouse_path

    log = DrainLog(redis_client)

    # without a fix: the letters fail again with the same reasons. The drain keeps one letter per
    # event, payload and reasons, so no new letter appears; the replay is settled as failed again.
    failed = replay_dead_letters(redis_client, lake, wh, LetterFilter(event_type="user_interaction"))
    assert (failed.selected, failed.injected, failed.already_valid) == (2, 2, 0)
    assert replay_outcomes(wh, lake, failed.replay_id, log).counts == {"replayed": 2}  # not drained yet
    run_drain_sensor()
    assert replay_outcomes(wh, lake, failed.replay_id, log).counts == {"failed_again": 2}
    assert lake_counts(platform_env)["dead_letter_events"] == 3

    # a fix that changes the reasons: the replay fails again as a new letter with its new reasons
    partly = replay_dead_letters(redis_client, lake, wh, LetterFilter(event_ids=(ids[1],)), fix="lowercase_action")
    run_drain_sensor()
    assert replay_outcomes(wh, lake, partly.replay_id, log).counts == {"failed_again": 1}
    new_letter = warehouse("SELECT raw_payload, failures[1].value, replay_status, is_latest_letter "
                           "FROM dead_letter_events WHERE event_id = ? ORDER BY stream_id", [ids[1]])
    assert [row[1:] for row in new_letter] == [("PLAY!", "failed_again", False), ("play!", "pending", True)]

    # the default selection (newest letter of each event, pending or failed again) with a fix that works
    fixed = replay_dead_letters(redis_client, lake, wh, LetterFilter(event_type="user_interaction"), fix="clean_action")
    assert (fixed.selected, fixed.injected) == (2, 2)
    run_drain_sensor()
    assert replay_outcomes(wh, lake, fixed.replay_id, log).counts == {"succeeded": 2}
    rows = warehouse("SELECT event_id, action FROM user_interactions ORDER BY track_id")
    assert rows == [(ids[1], "play"), (ids[2], "skip"), (ids[0], "play")]  # original event ids kept
    statuses = warehouse("SELECT replay_status, count(*) FROM dead_letter_events GROUP BY ALL ORDER BY 1")
    # the first PLAY! letter: its event is valid now; the rating letter was never replayed
    assert statuses == [("already_valid", 1), ("pending", 1), ("succeeded", 2)]


def test_replaying_the_same_letters_twice_never_duplicates_a_valid_row(platform_env, redis_client):
    enqueue(redis_client, [interaction(action="PAUSE!", track_id=f"t{i}") for i in range(5)])
    run_drain_sensor()
    settings = get_settings()
    lake, wh = settings.lake_dir, settings.warehouse_path
    letters = LetterFilter(event_type="user_interaction", statuses=("pending", "succeeded", "replayed"))
    first = replay_dead_letters(redis_client, lake, wh, letters, fix="clean_action")
    run_drain_sensor()
    second = replay_dead_letters(redis_client, lake, wh, letters, fix="clean_action")
    assert (first.injected, second.injected, second.already_valid) == (5, 0, 5)
    run_drain_sensor()
    assert warehouse("SELECT count(*), count(DISTINCT event_id) FROM user_interactions") == [(5, 5)]
    assert replay_outcomes(wh, lake, second.replay_id, DrainLog(redis_client)).counts == {"already_valid": 5}


def test_two_replays_racing_before_a_drain_land_each_event_once(platform_env, redis_client):
    """Both replays re-inject (neither sees a valid row yet); exactly-once then rests on the drain:
    its dedup by event_id, or at worst validation's duplicate check within one batch."""
    enqueue(redis_client, [interaction(action="LIKE!", track_id=f"t{i}") for i in range(3)])
    run_drain_sensor()
    settings = get_settings()
    lake, wh = settings.lake_dir, settings.warehouse_path
    letters = LetterFilter(event_type="user_interaction", statuses=("pending", "replayed"))
    replay_dead_letters(redis_client, lake, wh, letters, fix="clean_action")
    replay_dead_letters(redis_client, lake, wh, letters, fix="clean_action")
    run_drain_sensor()
    assert warehouse("SELECT count(*), count(DISTINCT event_id) FROM user_interactions") == [(3, 3)]


def test_cli_replay_reports_outcomes(platform_env, redis_client):
    enqueue(redis_client, [interaction(timestamp="26/11/2026 09:58", track_id="odd")])
    run_drain_sensor()
    printed = CliRunner().invoke(app, ["dlq", "replay", "--check", "timestamp_parseable",
                                       "--fix", "parse_odd_timestamp", "--wait", "0"])
    assert printed.exit_code == 0, printed.output
    assert "1 selected: 1 pass validation now" in printed.output and "1 re-injected" in printed.output
    assert "1 awaiting the drain" in printed.output
    replay_id = next(line for line in printed.output.splitlines() if line.startswith("replay-")).split(":")[0]
    run_drain_sensor()
    printed = CliRunner().invoke(app, ["dlq", "report", replay_id])
    assert "1 succeeded, 0 failed again" in printed.output
    assert warehouse("SELECT timestamp::VARCHAR FROM user_interactions") == [("2026-11-26 09:58:00+00",)]
    printed = CliRunner().invoke(app, ["dlq", "replay", "--fix", "no_such_fix"])
    assert printed.exit_code == 2 and "no fix named" in printed.output


def test_dlq_handling_off_fails_loudly_and_loses_nothing(platform_env, redis_client, monkeypatch):
    monkeypatch.setenv("ENABLE_DLQ_HANDLING", "false")
    get_settings.cache_clear()
    events = [interaction(track_id="a"), interaction(action="nope", track_id="b"), feedback(recommendation_id="ok")]
    enqueue(redis_client, events)
    with dg.instance_for_test() as instance:
        with pytest.raises(Exception) as raised:
            run_drain_sensor(instance)
        # The feedback stream drained and committed beside the failing one: reported, not lost.
        landed = instance.fetch_materializations(dg.AssetKey("feedback_events"), limit=5).records
        assert [r.asset_materialization.metadata["dagster/row_count"].value for r in landed] == [1]
    assert isinstance(raised.value, InvalidRowsError) or "ENABLE_DLQ_HANDLING is off" in str(raised.value)
    stream = EVENT_TYPES["user_interaction"].stream
    assert redis_client.xlen(stream) == 1
    assert DrainLog(redis_client).cursor(stream) == "0-0"  # nothing committed
    assert DrainLog(redis_client).cursor(EVENT_TYPES["feedback_event"].stream) != "0-0"
    assert lake_counts(platform_env)["dead_letter_events"] == 0
    assert warehouse("SELECT recommendation_id FROM feedback_events") == [("ok",)]  # queryable now

    monkeypatch.setenv("ENABLE_DLQ_HANDLING", "true")
    get_settings.cache_clear()
    run_drain_sensor()
    counts = lake_counts(platform_env)
    assert (counts["user_interactions"], counts["dead_letter_events"], counts["feedback_events"]) == (1, 1, 1)
    assert DrainLog(redis_client).cursor(stream) != "0-0"


def test_large_replay_reports_progress_in_chunks(platform_env, redis_client):
    enqueue(redis_client, [interaction(action="PLAY!", track_id=f"t{i}") for i in range(2_500)])
    run_drain_sensor()
    settings = get_settings()
    progress, selected = [], []
    result = replay_dead_letters(redis_client, settings.lake_dir, settings.warehouse_path, LetterFilter(),
                                 fix="clean_action", on_selected=selected.append, on_progress=progress.append)
    assert selected == [2_500] and progress == [1_000, 1_000, 500] and result.injected == 2_500
    run_drain_sensor()
    outcome = replay_outcomes(settings.warehouse_path, settings.lake_dir, result.replay_id, DrainLog(redis_client))
    assert outcome.counts == {"succeeded": 2_500}
    assert warehouse("SELECT count(*), count(DISTINCT event_id) FROM user_interactions") == [(2_500, 2_500)]


def test_dlq_list_filters_by_hour(platform_env, redis_client):
    enqueue(redis_client, [interaction(action="x")])
    run_drain_sensor()
    (hour,) = warehouse("SELECT strftime(date + to_hours(hour), '%Y-%m-%dT%H') FROM dead_letter_events")[0]
    runner = CliRunner()
    assert "1 dead letters" in runner.invoke(app, ["dlq", "list", "--since", hour, "--until", hour]).output
    later = runner.invoke(app, ["dlq", "list", "--since", "2999-01-01T00"])
    assert later.exit_code == 0 and "no dead letters match" in later.output
    bad = runner.invoke(app, ["dlq", "list", "--status", "lost"])
    assert bad.exit_code == 2 and "unknown status" in bad.output


def test_dry_run_predicts_without_changing_anything(platform_env, redis_client):
    enqueue(redis_client, [interaction(action="PLAY!", track_id="a"), interaction(action="Like ", track_id="b")])
    run_drain_sensor()
    stream = EVENT_TYPES["user_interaction"].stream
    length = redis_client.xlen(stream)
    printed = CliRunner().invoke(app, ["dlq", "replay", "--fix", "lowercase_action", "--dry-run"])
    assert printed.exit_code == 0, printed.output
    assert "2 selected: 1 pass validation now; failures predicted: action_in_enum 1" in printed.output
    assert "dry run: nothing re-injected" in printed.output
    assert redis_client.xlen(stream) == length
    assert warehouse("SELECT DISTINCT replay_status FROM dead_letter_events") == [("pending",)]


def test_replay_with_dlq_handling_off_holds_back_letters_that_would_fail_again(platform_env, redis_client, monkeypatch):
    enqueue(redis_client, [interaction(action="PLAY!", track_id="a"), interaction(action="Like ", track_id="b")])
    run_drain_sensor()
    monkeypatch.setenv("ENABLE_DLQ_HANDLING", "false")
    get_settings.cache_clear()
    printed = CliRunner().invoke(app, ["dlq", "replay", "--fix", "lowercase_action", "--wait", "0"])
    assert printed.exit_code == 0, printed.output
    assert "1 re-injected" in printed.output and "1 held back" in printed.output
    run_drain_sensor()  # does not raise: only the letter that passes was re-injected
    assert warehouse("SELECT action FROM user_interactions") == [("like",)]
    assert dict(warehouse("SELECT replay_status, count(*) FROM dead_letter_events GROUP BY ALL")) == {
        "pending": 1, "succeeded": 1}
