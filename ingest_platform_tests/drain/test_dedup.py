"""Exactly once by event_id: client retries, hour boundaries, dead-letter replays, determinism."""

from __future__ import annotations

from collections import Counter

import pyarrow.parquet as pq
import pytest

from ingest_platform.contract import DEAD_LETTER_DATASET, USER_INTERACTION
from ingest_platform.drain import dedup, micro_batch
from ingest_platform.storage.event_log import DrainLog, StreamRange
from ingest_platform.storage.lake import dataset_files
from ingest_platform_tests.drain.helpers import (
    STREAM,
    append,
    append_batches,
    hour_ms,
    interaction,
    landed_ids,
)


@pytest.fixture
def log(redis_client) -> DrainLog:
    return DrainLog(redis_client)


def drain_all(log: DrainLog, lake, max_entries: int = 1000) -> list:
    reports = []
    while batch := micro_batch.drain_all_streams(log, lake, max_entries):
        reports += batch
    return reports


def test_client_retries_land_once_within_a_batch_and_across_batches(log, redis_client, tmp_path):
    lake = tmp_path / "lake"
    append(redis_client, [interaction("e1"), interaction("e2"), interaction("e1")])  # retry in one batch
    append(redis_client, [interaction("e2"), interaction("e3")])  # retry in the next entry
    drain_all(log, lake, max_entries=1)  # one entry per drain: the retry is in another range
    append(redis_client, [interaction("e3"), interaction("e1"), interaction("e4")])
    reports = drain_all(log, lake)
    assert Counter(landed_ids(lake)) == Counter({"e1": 1, "e2": 1, "e3": 1, "e4": 1})
    assert sum(r.duplicates for r in reports) == 2


def test_duplicates_across_the_hour_boundary_are_removed(log, redis_client, tmp_path):
    lake = tmp_path / "lake"
    last_of_hour = hour_ms(hour=10) + 3_600_000 - 1
    append(redis_client, [interaction("a"), interaction("b")], entry_id=f"{last_of_hour}-0")
    append(redis_client, [interaction("b"), interaction("c")], entry_id=f"{last_of_hour + 1}-0")  # 11:00
    append(redis_client, [interaction("a")], entry_id=f"{last_of_hour + 2}-0")
    drain_all(log, lake)
    files = dataset_files(lake, USER_INTERACTION.dataset)
    assert [f.parent.name for f in files] == ["hour=10", "hour=11"]
    assert Counter(landed_ids(lake)) == Counter({"a": 1, "b": 1, "c": 1})


def test_hour_boundary_inside_one_range_splits_files_and_still_dedups(log, redis_client, tmp_path):
    lake = tmp_path / "lake"
    start = hour_ms(hour=10) + 3_600_000 - 2
    for i in range(4):  # two entries in hour 10, two in hour 11, all in one range
        append(redis_client, [interaction(f"x{i % 2}"), interaction(f"y{i}")], entry_id=f"{start + i}-0")
    reports = drain_all(log, lake)
    assert len(reports) == 1 and len(reports[0].files) == 2
    assert Counter(landed_ids(lake)) == Counter({"x0": 1, "x1": 1, "y0": 1, "y1": 1, "y2": 1, "y3": 1})


def test_a_retried_range_rewrites_identical_files(log, redis_client, tmp_path):
    lake = tmp_path / "lake"
    append_batches(redis_client, "r", entries=30, per_entry=10)
    append(redis_client, [interaction("r-0-0"), interaction("bad", action="jump")])
    rng = log.plan_next_range(STREAM, 1000)
    first = micro_batch.drain_stream_range(log, USER_INTERACTION, rng, lake)
    before = {f.path: pq.read_table(f.path) for f in first.files}
    again = micro_batch.drain_stream_range(log, USER_INTERACTION, rng, lake)  # a retry of the same plan
    assert [f.path for f in again.files] == list(before)
    for landed in again.files:
        assert pq.read_table(landed.path).equals(before[landed.path])
    assert (first.valid, first.dead, first.duplicates) == (again.valid, again.dead, again.duplicates) == (300, 1, 1)
    assert log.commit(rng, first.entries)


def test_a_stale_drain_of_a_committed_range_writes_nothing(log, redis_client, tmp_path):
    lake = tmp_path / "lake"
    append_batches(redis_client, "s", entries=3, per_entry=2)
    rng = log.plan_next_range(STREAM, 1000)
    micro_batch.drain_stream_range(log, USER_INTERACTION, rng, lake)
    assert log.commit(rng, 3)
    for path in dataset_files(lake, USER_INTERACTION.dataset):
        path.unlink()  # e.g. compacted away meanwhile
    late = micro_batch.drain_stream_range(log, USER_INTERACTION, rng, lake)
    assert late.superseded and not late.files and not dataset_files(lake, USER_INTERACTION.dataset)


def test_dead_letter_replayed_valid_lands_once_even_when_replayed_twice(log, redis_client, tmp_path):
    lake = tmp_path / "lake"
    append(redis_client, [interaction("d1", action="PLAY"), interaction("ok")])
    drain_all(log, lake)
    assert landed_ids(lake, DEAD_LETTER_DATASET) == ["d1"]
    # The dead-letter replay re-injects the fixed event with its original event_id, twice.
    append(redis_client, [interaction("d1", action="play")])
    drain_all(log, lake)
    append(redis_client, [interaction("d1", action="play")])
    append(redis_client, [interaction("d1", action="PLAY")])  # and an unfixed copy after it
    drain_all(log, lake)
    assert Counter(landed_ids(lake)) == Counter({"ok": 1, "d1": 1})
    assert landed_ids(lake, DEAD_LETTER_DATASET) == ["d1"]


def test_an_exact_retry_of_a_bad_event_is_one_dead_letter_but_new_reasons_are_a_new_one(log, redis_client, tmp_path):
    lake = tmp_path / "lake"
    append(redis_client, [interaction("bad", action="jump"), interaction("bad", action="jump")])
    append(redis_client, [interaction("bad", action="jump")])
    drain_all(log, lake)
    assert landed_ids(lake, DEAD_LETTER_DATASET) == ["bad"]
    append(redis_client, [interaction("bad", action="hop")])  # a different payload failing again
    drain_all(log, lake)
    assert landed_ids(lake, DEAD_LETTER_DATASET) == ["bad", "bad"]
    assert landed_ids(lake) == []
    letters = pq.read_table(dataset_files(lake, DEAD_LETTER_DATASET)[-1]).to_pylist()
    assert letters[0]["raw_payload"] == bytes(interaction("bad", action="hop").raw).decode()  # exactly as sent
    assert any("hop" in failure["message"] or failure["value"] == "hop" for failure in letters[0]["failures"])


def test_first_valid_occurrence_wins_when_an_invalid_one_comes_first_in_the_batch(log, redis_client, tmp_path):
    lake = tmp_path / "lake"
    append(redis_client, [interaction("m", action="jump"), interaction("m", user="u2"), interaction("m", user="u3")])
    drain_all(log, lake)
    table = pq.read_table(dataset_files(lake, USER_INTERACTION.dataset)[0])
    assert table["user_id"].to_pylist() == ["u2"]
    letters = pq.read_table(dataset_files(lake, DEAD_LETTER_DATASET)[0]).to_pylist()
    # The invalid one before it is a letter on its own merits; u3, a different event reusing the
    # id after the valid one, is a letter too: nothing vanishes.
    assert [[f["check"] for f in letter["failures"]] for letter in letters] == [
        ["action_in_enum"], ["event_id_unique_in_batch"]]
    assert letters[1]["raw_payload"] == bytes(interaction("m", user="u3").raw).decode()


def test_dedup_state_of_old_hours_is_forgotten(log, redis_client, tmp_path):
    from ingest_platform.drain.maintenance import forget_dedup_state

    lake = tmp_path / "lake"
    for h in (10, 11, 12, 13):
        append(redis_client, [interaction(f"h{h}")], entry_id=f"{hour_ms(hour=h)}-0")
    drain_all(log, lake)
    def hours_with_state():
        prefix = f"{dedup.DEDUP_KEY_PREFIX}{{{STREAM}}}:"
        return sorted({int(k.decode()[len(prefix):].split(":")[0])
                       for k in redis_client.scan_iter(match=prefix + "*")})

    assert hours_with_state() == [hour_ms(hour=h) for h in (10, 11, 12, 13)]
    assert forget_dedup_state(log) == 4  # a set and a stored decision for each of hours 10 and 11
    assert hours_with_state() == [hour_ms(hour=12), hour_ms(hour=13)]  # the cursor's hour, the one before


def test_a_retry_that_validates_differently_refuses_instead_of_dropping(log, redis_client, tmp_path):

    frame_events = [("e1", "v"), ("e2", "v")]
    claims = [(kind, event_id, "") for event_id, kind in frame_events]
    assert dedup.claim(redis_client, STREAM, hour_ms(hour=10), "b", claims) == []
    assert dedup.claim(redis_client, STREAM, hour_ms(hour=10), "b", claims) == []  # a retry: same answer
    with pytest.raises(dedup.DedupConflict):
        dedup.claim(redis_client, STREAM, hour_ms(hour=10), "b", [("v", "e1", ""), ("d", "e2", "x")])


def test_memory_is_bounded_by_the_range_and_the_file_target(log, redis_client, tmp_path, monkeypatch):
    lake = tmp_path / "lake"
    monkeypatch.setattr(micro_batch, "FILE_TARGET_EVENTS", 25)
    append_batches(redis_client, "b", entries=40, per_entry=10)
    first = micro_batch.drain_stream(log, USER_INTERACTION, lake, max_entries=10)
    assert first.entries == 10  # a drain takes at most max_entries entries, whatever the backlog
    assert [f.rows for f in first.files] == [30, 30, 30, 10]  # cut at >= 25 events, whole entries
    drain_all(log, lake, max_entries=10)
    assert len(landed_ids(lake)) == len(set(landed_ids(lake))) == 400


def test_range_start_is_fixed_by_the_plan(log, redis_client, tmp_path):
    append_batches(redis_client, "p", entries=5, per_entry=1)
    rng = log.plan_next_range(STREAM, 3)
    append_batches(redis_client, "q", entries=5, per_entry=1)
    assert log.plan_next_range(STREAM, 100) == rng  # an unfinished plan is resumed, not extended
    assert rng == StreamRange(STREAM, "0-0", rng.end)


def test_claims_of_a_batch_larger_than_one_script_call(redis_client):
    occurrences = [("v", f"big-{i % 24_000}", "") for i in range(25_000)]  # 1,000 repeats at the end
    occurrences[5] = ("d", "big-5", "digest")
    dropped = dedup.claim(redis_client, STREAM, hour_ms(hour=10), "big", occurrences)
    # big-5's first occurrence is a dead letter, so its valid repeat at 24,005 lands
    assert dropped == [i for i in range(24_000, 25_000) if i != 24_005]
    assert dedup.claim(redis_client, STREAM, hour_ms(hour=10), "big", occurrences) == dropped  # stored
    assert dedup.claim(redis_client, STREAM, hour_ms(hour=11), "next", [("v", "big-5", ""), ("v", "new", "")]) == [0]
