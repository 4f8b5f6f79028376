"""Each validation check, with a failing and a passing example: first on the split alone, then all
of them together through a real Redis and the real drain sensor."""

from __future__ import annotations

import duckdb
import polars as pl
import pytest

from ingest_platform.contract import EVENT_TYPES
from ingest_platform.drain.micro_batch import ISO_UTC
from ingest_platform.validation import rules as r
from ingest_platform.validation.split import split_valid_rows

from .helpers import RECEIVED_ISO, enqueue, feedback, interaction, run_drain_sensor

LONG_ID = "u" * 129

# (event, the check it fails, or None when it passes, a fragment of the message)
EXAMPLES = [
    pytest.param(interaction(user_id="user-42@eu.example"), None, None, id="id_charset-pass"),
    pytest.param(interaction(user_id="josé_müller"), None, None, id="id_charset-pass-unicode"),
    pytest.param(interaction(session_id="s 1"), r.ID_CHARSET, "session_id 's 1' contains characters", id="id_charset-fail"),
    pytest.param(interaction(event_id="e;drop"), r.ID_CHARSET, "event_id 'e;drop'", id="id_charset-fail-event_id"),
    pytest.param(interaction(user_id="u" * 128), None, None, id="id_length-pass-128"),
    pytest.param(interaction(user_id=LONG_ID), r.ID_LENGTH, "user_id is 129 characters long; at most 128", id="id_length-fail-long"),
    pytest.param(interaction(track_id=""), r.ID_LENGTH, "track_id is empty", id="id_length-fail-empty"),
    pytest.param(interaction(action="skip"), None, None, id="action-pass"),
    pytest.param(interaction(action="PLAY!"), "action_in_enum", "action 'PLAY!' is not one of play, pause", id="action-fail"),
    pytest.param(feedback(feedback_type="implicit", rating=0.5), None, None, id="feedback_type-pass"),
    pytest.param(feedback(feedback_type="stars"), "feedback_type_in_enum", "feedback_type 'stars' is not one of", id="feedback_type-fail"),
    pytest.param(feedback(rating=1.0), None, None, id="rating-pass-explicit-1"),
    pytest.param(feedback(rating=5.0), None, None, id="rating-pass-explicit-5"),
    pytest.param(feedback(rating=6.0), r.RATING_IN_RANGE, "rating 6.0 is out of range for explicit", id="rating-fail-explicit"),
    pytest.param(feedback(feedback_type="implicit", rating=1.5), r.RATING_IN_RANGE, "for implicit feedback", id="rating-fail-implicit"),
    pytest.param(interaction(timestamp="2026-11-26T11:00:00+01:00"), None, None, id="timestamp_parseable-pass-offset"),
    pytest.param(interaction(timestamp="26/11/2026 10:00"), r.TIMESTAMP_PARSEABLE, "timestamp '26/11/2026 10:00' is not an ISO 8601", id="timestamp_parseable-fail"),
    pytest.param(interaction(timestamp="2026-11-26T10:05:00Z"), None, None, id="timestamp_not_ahead-pass-5min"),
    pytest.param(interaction(timestamp="2026-11-26T10:05:01Z"), r.TIMESTAMP_NOT_AHEAD, "more than 5 minutes ahead of received_at 2026-11-26T10:00:00Z", id="timestamp_not_ahead-fail"),
    pytest.param(interaction(timestamp="2026-10-28T10:00:00Z"), None, None, id="timestamp_within_horizon-pass-29d"),
    pytest.param(interaction(timestamp="2026-10-01T00:00:00Z"), r.TIMESTAMP_WITHIN_HORIZON, "more than 30 days older than received_at", id="timestamp_within_horizon-fail"),
]


def drain_frame(events: list[dict], received_at: str = RECEIVED_ISO) -> tuple[str, pl.DataFrame]:
    """The frame the drain builds for one type (same columns and parsing), without Redis."""
    import msgspec

    from ingest_platform.gateway.events import to_stream_event

    (name, _), = events[0].items()
    event_type = EVENT_TYPES[name]
    columns = {n: [] for n in ("event_id", *event_type.payload_fields, "received_at", "api_key_id", "stream_id", "raw_payload")}
    for index, event in enumerate(events):
        raw = msgspec.json.encode(event)
        record = to_stream_event(event_type, msgspec.convert(event[name], event_type.payload), msgspec.Raw(raw))
        columns["event_id"].append(record.event_id)
        for field in event_type.payload_fields:
            columns[field].append(record.fields[field])
        columns["received_at"].append(received_at)
        columns["api_key_id"].append("k")
        columns["stream_id"].append(f"1-0/{index}")
        columns["raw_payload"].append(raw.decode())
    schema = {n: pl.Float64 if n == "rating" else pl.String for n in columns}
    frame = pl.DataFrame(columns, schema=schema).with_columns(
        pl.col(n).str.to_datetime(ISO_UTC, time_unit="us", time_zone="UTC", strict=False)
        for n in (*event_type.timestamp_fields, "received_at"))
    return name, frame


@pytest.mark.parametrize(("event", "check", "message"), EXAMPLES)
def test_check(event, check, message):
    name, frame = drain_frame([event])
    split = split_valid_rows(name, frame, r.QualityRules())
    assert split.valid.height + split.rejected.height == 1
    if check is None:
        assert split.valid.height == 1, split.rejected["failures"].to_list()
        return
    failures = split.rejected["failures"][0].to_list()
    assert [f["check"] for f in failures] == [check]
    assert message in failures[0]["message"]
    assert failures[0]["value"] is not None


def test_duplicate_event_id_keeps_the_first_and_rejects_the_rest():
    name, frame = drain_frame([interaction(event_id="dup", action="play"), interaction(event_id="ok"),
                               interaction(event_id="dup", action="skip"), interaction(event_id="dup", action="like")])
    split = split_valid_rows(name, frame, r.QualityRules())
    assert split.valid["event_id"].to_list() == ["dup", "ok"] and split.valid["action"].to_list() == ["play", "play"]
    assert split.rejected["action"].to_list() == ["skip", "like"]
    assert {f["check"] for fs in split.rejected["failures"].to_list() for f in fs} == {r.EVENT_ID_UNIQUE}


def test_every_failure_of_a_row_is_collected():
    name, frame = drain_frame([interaction(user_id="", action="Play", timestamp="yesterday", session_id="a b")])
    split = split_valid_rows(name, frame, r.QualityRules())
    failures = split.rejected["failures"][0].to_list()
    assert {(f["check"], f["column"]) for f in failures} == {
        (r.ID_LENGTH, "user_id"), (r.ID_CHARSET, "session_id"), ("action_in_enum", "action"),
        (r.TIMESTAMP_PARSEABLE, "timestamp")}
    assert all(f["message"] for f in failures)


def test_horizon_is_a_setting_measured_from_received_at(platform_env, monkeypatch):
    from ingest_platform.settings import get_settings

    monkeypatch.setenv("MAX_EVENT_AGE_HOURS", "24")
    get_settings.cache_clear()
    name, frame = drain_frame([interaction(timestamp="2026-11-25T09:00:00Z"), interaction(timestamp="2026-11-25T11:00:00Z")])
    split = split_valid_rows(name, frame)  # rules from settings
    assert split.rejected["failures"][0][0]["check"] == r.TIMESTAMP_WITHIN_HORIZON
    assert "more than 24 hours older" in split.rejected["failures"][0][0]["message"]
    assert split.valid.height == 1


def test_each_check_through_redis_and_the_drain_sensor(platform_env, redis_client):
    events = [p.values[0] for p in EXAMPLES]
    expected = {i: p.values[1] for i, p in enumerate(EXAMPLES)}
    ids = enqueue(redis_client, events)
    result = run_drain_sensor()
    assert result.asset_events
    con = duckdb.connect()
    lake = platform_env / "lake"
    valid = {row[0] for row in con.execute(
        f"SELECT event_id FROM read_parquet('{lake}/user_interactions/*/*/*.parquet') UNION ALL "
        f"SELECT event_id FROM read_parquet('{lake}/feedback_events/*/*/*.parquet')").fetchall()}
    dead = {row[0]: row[1] for row in con.execute(
        f"SELECT event_id, list_transform(failures, lambda f: f.check) FROM "
        f"read_parquet('{lake}/dead_letter_events/*/*/*.parquet')").fetchall()}
    assert len(valid) + len(dead) == len(events)
    for index, event_id in enumerate(ids):
        if expected[index] is None:
            assert event_id in valid, EXAMPLES[index].id
        else:
            assert dead.get(event_id) == [expected[index]], EXAMPLES[index].id


def test_models_cover_every_contract_field():
    """The models are written out for readability; this keeps them in step with the contract."""
    from ingest_platform.contract import ENVELOPE_FIELDS
    from ingest_platform.validation.schemas import event_schema

    for name, event_type in EVENT_TYPES.items():
        columns = set(event_schema(name).to_schema().columns)
        contract = set(event_type.arrow_schema.names) - set(ENVELOPE_FIELDS) | {"received_at"}
        assert columns == contract, name
        assert set(r.checks_of(name)) >= {r.enum_check(c) for c in r.ENUM_COLUMNS if c in contract}
