"""Reused event_ids, replays that fail again, superseded letters: through a real Redis and the drain
sensor. Nothing accepted may vanish: every occurrence is a valid row, a dead letter, or a counted
retry (the same payload fields as an earlier occurrence of its id, however the JSON was written)."""

from __future__ import annotations

import json
import typing

import dagster as dg
import msgspec
import pyarrow as pa

from ingest_platform.contract import EVENT_TYPES
from ingest_platform.dlq.inspection import LetterFilter
from ingest_platform.dlq.replay import AWAITING_DRAIN_KEY, replay_dead_letters, settle_awaiting
from ingest_platform.drain.micro_batch import drain_all_streams
from ingest_platform.settings import get_settings
from ingest_platform.storage.event_log import DrainLog
from ingest_platform.validation.schemas import event_schema

from .helpers import check_results, enqueue, interaction, run_drain_sensor
from .test_dead_letters import lake_counts, warehouse

LETTERS_SQL = ("SELECT event_id, raw_payload, list_transform(failures, lambda f: f.check), replay_status "
               "FROM dead_letter_events ORDER BY stream_id")


def duplicates_dropped(result: dg.SensorResult) -> int:
    """The drain report's count (every materialisation of a stream's drain repeats it)."""
    per_stream = {m.metadata["stream"].value: m.metadata["duplicates_dropped"].value
                  for m in result.asset_events if isinstance(m, dg.AssetMaterialization)}
    return sum(per_stream.values())


def raw(event: dict) -> str:
    return msgspec.json.encode(event).decode()  # what `enqueue` sends as the raw payload


def test_an_identical_retry_in_one_batch_is_one_row_and_no_letter(platform_env, redis_client):
    event = interaction(event_id="e1", track_id="t1")
    enqueue(redis_client, [event, interaction(event_id="e2"), event])
    result = run_drain_sensor()
    assert warehouse("SELECT event_id FROM user_interactions ORDER BY event_id") == [("e1",), ("e2",)]
    assert lake_counts(platform_env)["dead_letter_events"] == 0
    assert duplicates_dropped(result) == 1


def test_a_retry_with_the_assigned_id_and_other_formatting_is_one_row_and_no_letter(platform_env, redis_client):
    """After `503 outcome_unknown` the client resends the event with the id the gateway generated;
    its JSON library also orders keys and spaces differently. Redis ran the unanswered write when
    it woke, so both occurrences fall in one drain batch: one event, a counted retry, no letter."""
    (assigned,) = enqueue(redis_client, [interaction(track_id="t1")])  # no event_id: the gateway's
    retry = ('{ "user_interaction": {\n  "timestamp": "2026-11-26T09:59:00Z", "action": "play",\n'
             f'  "event_id": "{assigned}", "track_id": "t1", "session_id": "s1", "user_id": "u1"}} }}')
    enqueue(redis_client, [retry, interaction(event_id="other")])
    result = run_drain_sensor()
    assert warehouse("SELECT event_id, track_id FROM user_interactions ORDER BY event_id") == [
        (assigned, "t1"), ("other", "t1")]
    assert lake_counts(platform_env)["dead_letter_events"] == 0
    assert duplicates_dropped(result) == 1
    assert check_results(result)[("user_interactions", "event_ids_unique")][0].passed


def test_a_retry_with_another_timestamp_is_another_event(platform_env, redis_client):
    """Only the encoding may differ: a different value of any payload field is a reused id."""
    first = interaction(event_id="e1", timestamp="2026-11-26T09:59:00Z")
    moved = interaction(event_id="e1", timestamp="2026-11-26T09:59:30Z")
    enqueue(redis_client, [first, moved])
    result = run_drain_sensor()
    assert warehouse("SELECT event_id FROM user_interactions") == [("e1",)]
    assert warehouse(LETTERS_SQL) == [("e1", raw(moved), ["event_id_unique_in_batch"], "pending")]
    assert duplicates_dropped(result) == 0


def test_unparseable_timestamps_compare_by_their_raw_text(platform_env, redis_client):
    """A timestamp that does not parse is null in the drain's frame: two different ones must not
    compare equal there, so each is a letter; the exact same one again is a retry."""
    bad_a = interaction(event_id="e1", timestamp="26/11/2026 09:59")
    bad_b = interaction(event_id="e1", timestamp="26/11/2026 09:58")
    enqueue(redis_client, [interaction(event_id="e1"), bad_a, bad_b, bad_a])
    result = run_drain_sensor()
    assert warehouse("SELECT event_id FROM user_interactions") == [("e1",)]
    assert [(raw_payload, checks) for _, raw_payload, checks, _ in warehouse(LETTERS_SQL)] == [
        (raw(bad_a), ["timestamp_parseable", "event_id_unique_in_batch"]),
        (raw(bad_b), ["timestamp_parseable", "event_id_unique_in_batch"]),
    ]
    assert duplicates_dropped(result) == 1


def test_a_reused_id_with_other_content_is_a_letter_with_its_exact_raw(platform_env, redis_client):
    first, other = interaction(event_id="e1", track_id="t1"), interaction(event_id="e1", track_id="t2")
    enqueue(redis_client, [first, other])
    result = run_drain_sensor()
    assert warehouse("SELECT event_id, track_id FROM user_interactions") == [("e1", "t1")]
    assert warehouse(LETTERS_SQL) == [("e1", raw(other), ["event_id_unique_in_batch"], "pending")]
    assert duplicates_dropped(result) == 0
    unique = check_results(result)[("user_interactions", "event_ids_unique")][0]
    assert not unique.passed  # the check can fire now: the drain no longer hides reuse from it


def test_probe_a_three_events_sharing_an_id(platform_env, redis_client):
    """The reviewer's probe: play, skip and an invalid PLAY! under one event_id in one batch."""
    events = [interaction(event_id="dup", action="play", track_id="t1"),
              interaction(event_id="dup", action="skip", track_id="t2"),
              interaction(event_id="dup", action="PLAY!", track_id="t3")]
    enqueue(redis_client, events)
    result = run_drain_sensor()
    assert warehouse("SELECT action FROM user_interactions") == [("play",)]
    assert warehouse(LETTERS_SQL) == [
        ("dup", raw(events[1]), ["event_id_unique_in_batch"], "pending"),
        ("dup", raw(events[2]), ["action_in_enum", "event_id_unique_in_batch"], "pending"),
    ]
    assert duplicates_dropped(result) == 0


def test_an_invalid_first_occurrence_does_not_own_the_id(platform_env, redis_client):
    """The event is the first *valid* occurrence: the invalid one before it is a letter on its own
    merits, a retry of it is dropped, another event after the valid one is a reuse letter."""
    bad = interaction(event_id="m", action="jump")
    good, later = interaction(event_id="m", track_id="t2"), interaction(event_id="m", track_id="t3")
    enqueue(redis_client, [bad, bad, good, bad, good, later])
    result = run_drain_sensor()
    assert warehouse("SELECT track_id FROM user_interactions") == [("t2",)]
    assert warehouse(LETTERS_SQL) == [
        ("m", raw(bad), ["action_in_enum"], "superseded"),  # its event is a valid row now
        ("m", raw(later), ["event_id_unique_in_batch"], "pending"),  # another event: not superseded
    ]
    assert duplicates_dropped(result) == 3  # bad twice, good once


def test_counts_add_up_with_retries_and_reuse_mixed_in(platform_env, redis_client):
    events = [interaction(event_id=f"v{i}", track_id=f"t{i}") for i in range(50)]
    events += [interaction(event_id=f"v{i}", track_id=f"t{i}") for i in range(0, 50, 5)]  # 10 retries
    events += [interaction(event_id=f"v{i}", track_id="other") for i in range(0, 50, 10)]  # 5 reuses
    events += [interaction(event_id=f"b{i}", action="nope") for i in range(7)]  # 7 invalid
    enqueue(redis_client, events)
    result = run_drain_sensor()
    counts = lake_counts(platform_env)
    assert counts == {"user_interactions": 50, "feedback_events": 0, "dead_letter_events": 12}
    assert duplicates_dropped(result) == 10
    assert counts["user_interactions"] + counts["dead_letter_events"] + duplicates_dropped(result) == len(events)


def test_reuse_across_batches_follows_the_idempotency_key(platform_env, redis_client):
    """Across drain batches the first claim wins: a later occurrence is dropped and counted."""
    enqueue(redis_client, [interaction(event_id="k", track_id="t1")])
    run_drain_sensor()
    enqueue(redis_client, [interaction(event_id="k", track_id="t2")])
    # (the sensor reports counts only beside landed files, and this drain lands none)
    reports = drain_all_streams(DrainLog(redis_client), get_settings().lake_dir, 1000)
    assert sum(report.duplicates for report in reports) == 1
    assert warehouse("SELECT track_id FROM user_interactions") == [("t1",)]
    assert lake_counts(platform_env)["dead_letter_events"] == 0


def test_a_replay_failing_again_identically_settles_without_a_report(platform_env, redis_client):
    enqueue(redis_client, [interaction(action="PLAY!")])
    run_drain_sensor()
    settings = get_settings()
    result = replay_dead_letters(redis_client, settings.lake_dir, settings.warehouse_path, LetterFilter())
    assert result.injected == 1
    assert warehouse("SELECT replay_status FROM dead_letter_events") == [("replayed",)]
    run_drain_sensor()  # drops the entry as an exact repeat of the letter, then settles the replay
    assert warehouse("SELECT replay_status, failures[1].check, replay_id FROM dead_letter_events") == [
        ("failed_again", "action_in_enum", result.replay_id)]
    assert lake_counts(platform_env)["dead_letter_events"] == 1  # still one letter, not two


def test_a_note_rewritten_while_the_drain_settles_survives(platform_env, redis_client):
    """The drain reads the awaiting notes, settles (a second or two), then forgets them; a replay
    still injecting notes later entries under the same replay_id meanwhile. Forgetting the note
    it read must not erase the newer one, or those entries would never be settled."""
    enqueue(redis_client, [interaction(event_id="a1", action="PLAY!")])
    run_drain_sensor()
    settings = get_settings()
    result = replay_dead_letters(redis_client, settings.lake_dir, settings.warehouse_path, LetterFilter())
    log = DrainLog(redis_client)
    drain_all_streams(log, settings.lake_dir, 1000)  # passes the replayed entry, settles nothing
    read = redis_client.hgetall(AWAITING_DRAIN_KEY)  # what the drain read before settling
    enqueue(redis_client, [interaction(event_id="a2")])  # the replay's next chunk, noted meanwhile
    stream = EVENT_TYPES["user_interaction"].stream
    (later, _), = redis_client.xrevrange(stream, count=1)
    newer = json.dumps({stream: later.decode()})
    redis_client.hset(AWAITING_DRAIN_KEY, result.replay_id, newer)

    assert settle_awaiting(log, settings.warehouse_path, settings.lake_dir, read) == 1
    assert redis_client.hget(AWAITING_DRAIN_KEY, result.replay_id) == newer.encode()
    run_drain_sensor()  # passes the later entry: the note is settled and forgotten now
    assert redis_client.hgetall(AWAITING_DRAIN_KEY) == {}
    assert warehouse("SELECT replay_status FROM dead_letter_events") == [("failed_again",)]


def test_a_letter_whose_event_later_landed_valid_is_superseded(platform_env, redis_client):
    enqueue(redis_client, [interaction(event_id="s1", action="PLAY!"), interaction(event_id="s2", action="PLAY!")])
    run_drain_sensor()
    enqueue(redis_client, [interaction(event_id="s1", action="play")])  # the client's corrected retry
    run_drain_sensor()
    assert warehouse("SELECT event_id, replay_status FROM dead_letter_events ORDER BY event_id") == [
        ("s1", "superseded"), ("s2", "pending")]
    settings = get_settings()
    again = replay_dead_letters(redis_client, settings.lake_dir, settings.warehouse_path, LetterFilter())
    assert again.selected == 1  # the default selection skips superseded letters


def test_models_take_names_dtypes_and_nullability_from_the_contract():
    lake_dtypes = {pa.string(): "String", pa.float64(): "Float64",
                   pa.timestamp("us", tz="UTC"): "Datetime(time_unit='us', time_zone='UTC')"}
    for name, event_type in EVENT_TYPES.items():
        columns = event_schema(name).to_schema().columns
        optional = {f.name for f in msgspec.structs.fields(event_type.payload) if type(None) in typing.get_args(f.type)}
        for field in event_type.arrow_schema:
            if field.name in ("api_key_id", "stream_id"):
                continue  # envelope columns ride along unchecked
            assert str(columns[field.name].dtype) == lake_dtypes[field.type], (name, field.name)
            expected_nullable = field.name in optional and field.name != "event_id"  # the gateway stamps one
            assert columns[field.name].nullable == expected_nullable, (name, field.name)
