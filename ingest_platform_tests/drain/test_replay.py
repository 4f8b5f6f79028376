"""Replay (CLI and Dagster backfill) and trimming: idempotent, never beyond what is safe."""

from __future__ import annotations


from datetime import datetime, timedelta, timezone

import dagster as dg
import pytest

from typer.testing import CliRunner

from ingest_platform.cli import app
from ingest_platform.contract import DEAD_LETTER_DATASET, USER_INTERACTION
from ingest_platform.drain import compaction, replay, trimming
from ingest_platform.settings import get_settings
from ingest_platform.storage.event_log import DrainLog
from ingest_platform.storage.lake import dataset_files
from ingest_platform_tests.drain.helpers import STREAM, append, append_batches, hour_ms, interaction, landed_ids
from ingest_platform_tests.drain.test_dedup import drain_all
from ingest_platform_tests.drain.test_faults import assert_exactly, run_runner


@pytest.fixture
def log(redis_client) -> DrainLog:
    return DrainLog(redis_client)


def landed_two_hours(log, client, lake) -> list[str]:
    acknowledged = append_batches(client, "p", entries=6, per_entry=5, id_ms=hour_ms(hour=10))
    acknowledged += append_batches(client, "q", entries=6, per_entry=5, id_ms=hour_ms(hour=11))
    append(client, [interaction("p-0-0"), interaction("bad", action="jump")], entry_id=f"{hour_ms(hour=11) + 50}-0")
    drain_all(log, lake, max_entries=3)
    return acknowledged


def test_replay_cli_restores_lost_files_and_is_idempotent(platform_env, redis_client, log):
    lake = get_settings().lake_dir
    acknowledged = landed_two_hours(log, redis_client, lake)
    lost = dataset_files(lake, USER_INTERACTION.dataset)[1:3]
    for path in lost:
        path.unlink()  # files lost (deleted by hand, a bad disk...)
    dead_letter = dataset_files(lake, DEAD_LETTER_DATASET)[0]
    dead_letter.unlink()
    args = ["replay", "--stream", "user_interaction", "--from", "2026-11-26T10:00:00Z",
            "--to", "2026-11-26T11:59:59Z"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert_exactly(lake, acknowledged)
    assert landed_ids(lake, DEAD_LETTER_DATASET) == ["bad"]
    again = CliRunner().invoke(app, [*args[:3], "--from", f"{hour_ms(hour=10)}-0", "--to", str(hour_ms(hour=12))])
    assert again.exit_code == 0, again.output
    assert "0 valid rows and 0 dead letters written" in again.output
    assert_exactly(lake, acknowledged)


def test_replay_never_goes_past_the_committed_cursor(log, redis_client, tmp_path):
    lake = tmp_path / "lake"
    acknowledged = landed_two_hours(log, redis_client, lake)
    undrained = append_batches(redis_client, "u", entries=3, per_entry=2, id_ms=hour_ms(hour=12))
    report = replay.replay_range(log, USER_INTERACTION, lake, "0-0", f"{hour_ms(hour=13)}-0")
    assert report.landed_valid == 0 and report.end == log.cursor(STREAM)
    drain_all(log, lake)
    assert_exactly(lake, acknowledged + undrained)


def test_kill_during_replay_then_replay_again(redis_server, redis_client, log, tmp_path):
    lake = tmp_path / "lake"
    acknowledged = landed_two_hours(log, redis_client, lake)
    for path in dataset_files(lake, USER_INTERACTION.dataset):
        path.unlink()  # the whole valid dataset is lost; one replay file per hour will be written
    process = run_runner("kill_in_replay", redis_server.url, lake)
    assert process.returncode == -9
    assert 0 < len(landed_ids(lake)) < len(acknowledged)
    redis_client.delete("ingest:drain:maintenance-lock")  # the killed holder's lock (a TTL frees it otherwise)
    replay.replay_range(log, USER_INTERACTION, lake, "0-0", f"{hour_ms(hour=12)}-0")
    assert_exactly(lake, acknowledged)


def test_replay_after_compaction_and_of_overlapping_ranges(log, redis_client, tmp_path):
    lake = tmp_path / "lake"
    acknowledged = landed_two_hours(log, redis_client, lake)
    compaction.compact_closed_hours(log, lake, timedelta(0), 1000)
    replay.replay_range(log, USER_INTERACTION, lake, f"{hour_ms(hour=10)}-0", f"{hour_ms(hour=11) + 2}-0")
    replay.replay_range(log, USER_INTERACTION, lake, f"{hour_ms(hour=10) + 3}-0", f"{hour_ms(hour=12)}-0")
    assert_exactly(lake, acknowledged)


def test_dagster_backfill_of_an_hour_partition_replays_it(platform_env, redis_client, log):
    from ingest_platform.defs.ingestion.assets import landed_events
    from ingest_platform.defs.resources import resources_from_settings

    lake = get_settings().lake_dir
    acknowledged = landed_two_hours(log, redis_client, lake)
    hour_10 = [p for p in dataset_files(lake, USER_INTERACTION.dataset) if p.parent.name == "hour=10"]
    for path in hour_10:
        path.unlink()
    resources = resources_from_settings(get_settings())
    with dg.instance_for_test() as instance:
        for _ in range(2):  # a second backfill of the same partition changes nothing
            result = dg.materialize([landed_events], partition_key="2026-11-26-10:00", resources=resources,
                                    instance=instance)
            assert result.success
        materialised = result.asset_materializations_for_node("landed_events")
    assert {m.asset_key.to_user_string() for m in materialised} == {"user_interactions", "feedback_events",
                                                                   "dead_letter_events"}
    rows = {m.asset_key.to_user_string(): m.metadata["dagster/row_count"].value for m in materialised}
    assert rows["user_interactions"] == 0  # the second run found everything landed
    assert_exactly(lake, acknowledged)


def test_trimming_keeps_undrained_and_retained_entries(log, redis_client, tmp_path):
    lake = tmp_path / "lake"
    old = append_batches(redis_client, "o", entries=5, per_entry=1, id_ms=hour_ms(hour=10))
    drain_all(log, lake)
    undrained = append_batches(redis_client, "n", entries=5, per_entry=1, id_ms=hour_ms(hour=11))
    now_ms = hour_ms(hour=12)
    # Retention 24 h: nothing of hour 10 is old enough yet.
    assert trimming.trim_streams(log, timedelta(hours=24), now_ms)[0].removed == 0
    # Retention 1 h: everything below the committed cursor may go, the cursor's entry stays.
    trimmed = trimming.trim_streams(log, timedelta(hours=1), now_ms)
    assert trimmed[0].below == log.cursor(STREAM) and trimmed[0].removed == 4
    # Even with no retention at all, undrained entries are never trimmed.
    trimming.trim_streams(log, timedelta(0), hour_ms(hour=20))
    assert redis_client.xlen(STREAM) == 6
    drain_all(log, lake)
    assert_exactly(lake, old + undrained)
    assert log.lag(STREAM)[0] == 0  # the gateway's backlog counter is unaffected by trimming


def test_replay_bounds_parse_ids_ms_and_times():
    assert replay.parse_bound("1764151200000-3", upper=False) == "1764151200000-3"
    assert replay.parse_bound("1764151200000", upper=True) == f"1764151200000-{replay.MAX_SEQ}"
    assert replay.parse_bound("2025-11-26T10:00:00Z", upper=False) == "1764151200000-0"
    assert replay.parse_bound("2025-11-26T11:00:00+01:00", upper=False) == "1764151200000-0"
    with pytest.raises(ValueError):
        replay.parse_bound("yesterday", upper=False)


def test_replay_cli_rejects_unknown_streams(platform_env):
    result = CliRunner().invoke(app, ["replay", "--stream", "nope", "--from", "0", "--to", "1"])
    assert result.exit_code == 2 and "unknown stream" in result.output




HOUR_10 = datetime(2026, 11, 26, 10, tzinfo=timezone.utc)


def dead_letter_files(lake) -> list:
    return dataset_files(lake, DEAD_LETTER_DATASET)


def test_backfill_never_writes_a_reuse_letter_the_drain_dropped_across_batches(log, redis_client, tmp_path):
    """The drain lands x from its first batch and drops the other event under id x in a later
    batch (an idempotency key across batches). Replay cuts the hour as one chunk, where the second
    x reads as a reuse inside a batch: it must stay dropped, so an intact hour is a no-op."""
    lake = tmp_path / "lake"
    append(redis_client, [interaction("x")], entry_id=f"{hour_ms(hour=10)}-0")
    drain_all(log, lake)
    append(redis_client, [interaction("x", action="skip")], entry_id=f"{hour_ms(hour=10) + 1}-0")
    reports = drain_all(log, lake)
    assert sum(r.duplicates for r in reports) == 1 and dead_letter_files(lake) == []
    report = replay.replay_hour(log, USER_INTERACTION, lake, HOUR_10)
    assert (report.landed_valid, report.landed_dead, report.already_landed) == (0, 0, 1)
    assert dead_letter_files(lake) == [] and landed_ids(lake) == ["x"]


def test_backfill_restores_a_reuse_letter_of_one_drain_batch(log, redis_client, tmp_path):
    """x and another event under id x in one drain batch: a valid row and a letter. Replay lands
    the letter again when it is lost, beside its twin's file or with the whole hour."""
    lake = tmp_path / "lake"
    append(redis_client, [interaction("x"), interaction("x", action="skip")], entry_id=f"{hour_ms(hour=10)}-0")
    drain_all(log, lake)
    assert landed_ids(lake, DEAD_LETTER_DATASET) == ["x"]
    intact = replay.replay_hour(log, USER_INTERACTION, lake, HOUR_10)
    assert (intact.landed_valid, intact.landed_dead, intact.already_landed) == (0, 0, 2)

    for path in dead_letter_files(lake):
        path.unlink()  # the letter lost, its twin's file still there: same entry range
    report = replay.replay_hour(log, USER_INTERACTION, lake, HOUR_10)
    assert (report.landed_valid, report.landed_dead) == (0, 1)

    for path in dataset_files(lake, USER_INTERACTION.dataset) + dead_letter_files(lake):
        path.unlink()  # the whole hour lost
    report = replay.replay_hour(log, USER_INTERACTION, lake, HOUR_10)
    assert (report.landed_valid, report.landed_dead) == (1, 1)
    assert landed_ids(lake) == ["x"] and landed_ids(lake, DEAD_LETTER_DATASET) == ["x"]
