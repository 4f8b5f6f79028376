"""The stream entry format: raws in their own field, and entries written before that still drain."""

from __future__ import annotations

import msgspec
import pytest
import pyarrow.parquet as pq

from ingest_platform.contract import (
    DEAD_LETTER_DATASET,
    STREAM_ENTRY_FIELD,
    STREAM_RAW_FIELD,
    StreamEntry,
    StreamEvent,
    decode_stream_entry,
    encode_stream_entry,
    stream_entry_encoder,
)
from ingest_platform.drain import micro_batch
from ingest_platform.storage.event_log import DrainLog
from ingest_platform.storage.lake import dataset_files
from ingest_platform_tests.drain.helpers import STREAM, interaction, landed_ids

# Whitespace, a newline, escapes and non-ASCII: a raw is kept byte for byte, never re-encoded.
ODD_RAW = ('{ "user_interaction" :\n  {"user_id": "u\\u00e9", "session_id": "s1", "track_id": "t1",'
           ' "action": "jump", "timestamp": "2026-11-26T10:00:00Z", "event_id": "odd"} }').encode()


def _events() -> list[StreamEvent]:
    odd = StreamEvent("odd", {"user_id": "u\u00e9", "session_id": "s1", "track_id": "t1", "action": "jump",
                              "timestamp": "2026-11-26T10:00:00Z"}, msgspec.Raw(ODD_RAW))
    return [interaction("a"), odd, interaction("b", action="hop"), interaction("c")]


def _entry(events: list[StreamEvent]) -> StreamEntry:
    return StreamEntry("user_interaction", "2026-11-26T10:00:01Z", "k1", events)


def _drain(redis_client, lake):
    log = DrainLog(redis_client)
    while micro_batch.drain_all_streams(log, lake, max_entries=10):
        pass


def _dead_letter_raws(lake) -> dict[str, str]:
    rows = [row for path in dataset_files(lake, DEAD_LETTER_DATASET) for row in pq.read_table(path).to_pylist()]
    return {row["event_id"]: row["raw_payload"] for row in rows}


def test_an_entry_keeps_fields_and_raws_apart_and_reads_back_whole():
    entry = _entry(_events())
    fields = encode_stream_entry(entry)
    assert b"\\u00e9" not in fields[STREAM_ENTRY_FIELD]  # the raws are not in the fields' JSON
    assert fields[STREAM_RAW_FIELD].count(ODD_RAW) == 1
    back = decode_stream_entry(fields)
    assert [bytes(e.raw) for e in back.events] == [bytes(e.raw) for e in entry.events]
    assert [e.fields for e in back.events] == [e.fields for e in entry.events]


def test_dead_letters_get_their_raw_json_exactly_as_sent(redis_client, tmp_path):
    redis_client.xadd(STREAM, encode_stream_entry(_entry(_events())))
    _drain(redis_client, tmp_path / "lake")
    assert sorted(landed_ids(tmp_path / "lake")) == ["a", "c"]
    assert _dead_letter_raws(tmp_path / "lake") == {
        "odd": ODD_RAW.decode(), "b": bytes(interaction("b", action="hop").raw).decode()}


def test_entries_written_before_the_raws_moved_out_still_drain_with_their_raws(redis_client, tmp_path):
    """An upgrade finds entries of the earlier format in Redis: one field, each raw inside its event."""
    earlier = {STREAM_ENTRY_FIELD: stream_entry_encoder.encode(_entry(_events()))}
    assert b'"raw":' in earlier[STREAM_ENTRY_FIELD]
    redis_client.xadd(STREAM, earlier)
    redis_client.xadd(STREAM, encode_stream_entry(_entry([interaction("d"), interaction("e", action="skipped")])))
    _drain(redis_client, tmp_path / "lake")
    assert sorted(landed_ids(tmp_path / "lake")) == ["a", "c", "d"]
    assert _dead_letter_raws(tmp_path / "lake") == {
        "odd": ODD_RAW.decode(), "b": bytes(interaction("b", action="hop").raw).decode(),
        "e": bytes(interaction("e", action="skipped").raw).decode()}
    assert decode_stream_entry(earlier).events[1].raw == msgspec.Raw(ODD_RAW)


def test_an_entry_with_fewer_raws_than_events_stops_the_drain_with_a_clear_error(redis_client, tmp_path):
    fields = encode_stream_entry(_entry([interaction("a"), interaction("b", action="hop")]))
    fields[STREAM_RAW_FIELD] = stream_entry_encoder.encode([interaction("a").raw])
    redis_client.xadd(STREAM, fields)
    with pytest.raises(ValueError, match="fewer raw payloads than events"):
        _drain(redis_client, tmp_path / "lake")
    assert DrainLog(redis_client).lag(STREAM)[0] == 1  # not drained, so nothing is lost
