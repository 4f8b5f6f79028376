"""The gateway's parsing shortcuts give exactly what the plain path gives (no Redis, no server)."""

from __future__ import annotations

import json
import re

import msgspec
import pytest

from ingest_platform.contract import (
    EVENT_TYPES,
    STREAM_ENTRY_FIELD,
    STREAM_RAW_FIELD,
    StreamEntry,
    decode_stream_entry,
    encode_stream_entry,
    stream_entry_encoder,
)
from ingest_platform.gateway import events, metrics
from ingest_platform.gateway.events import (
    Limits,
    Policy,
    parse_events,
    results,
    split_body,
    stream_entries,
    to_stream_event,
)
from ingest_platform.gateway.state import utc_now_iso

LIMITS = Limits(max_batch_events=500, max_event_bytes=32 * 1024)
POLICY = Policy(frozenset(EVENT_TYPES))
SCOPES = frozenset(EVENT_TYPES)
RECEIVED_AT = "2026-11-26T10:00:01.000000Z"

INTERACTION = {"user_id": "u1", "session_id": "s1", "track_id": "t1", "action": "play",
               "timestamp": "2026-11-26T11:00:00+01:00", "event_id": "id-1"}
FEEDBACK = {"user_id": "u1", "recommendation_id": "r1", "feedback_type": "explicit", "rating": 4.5,
            "timestamp": "2026-11-26T10:00:00Z", "event_id": "id-2"}
TRICKY = [  # each needs sanitising in a different way
    {"user_interaction": INTERACTION},
    {"feedback_event": FEEDBACK},
    {"user_interaction": {**INTERACTION, "user_id": "  padded  ", "event_id": " id-3 "}},
    {"user_interaction": {**INTERACTION, "track_id": "Cafe\u0301", "event_id": "id-4"}},  # not NFC
    {"user_interaction": {**INTERACTION, "session_id": "a\u0007b\u0085c", "event_id": "id-5"}},  # controls
    {"user_interaction": {**INTERACTION, "action": "pl\\u0061y", "event_id": "id-6"}},  # an escape
    {"user_interaction": {**INTERACTION, "timestamp": "not a time", "event_id": "id-7"}},
    {"feedback_event": {**FEEDBACK, "rating": 4, "event_id": "id-8"}},  # an int where a float goes
]


def _wire(event: dict) -> bytes:
    # json.dumps would escape the escape in "pl\\u0061y": write that one as a JSON escape on purpose
    return json.dumps(event, ensure_ascii=False).replace("\\\\u0061", "\\u0061").encode()


def _plain_entries(raws: list[bytes]) -> dict[str, dict[bytes, bytes]]:
    """The stream entries of these events through the plain path (`to_stream_event` and the
    contract's own encoding), per event type."""
    by_type: dict[str, list] = {}
    for raw in raws:
        (name, inner), = msgspec.json.decode(raw).items()
        payload = msgspec.convert(inner, EVENT_TYPES[name].payload)
        by_type.setdefault(name, []).append(to_stream_event(EVENT_TYPES[name], payload, msgspec.Raw(raw)))
    return {EVENT_TYPES[name].stream: encode_stream_entry(StreamEntry(name, RECEIVED_AT, "k1", stream_events))
            for name, stream_events in by_type.items()}


@pytest.mark.parametrize("as_batch", [False, True])
def test_stream_entries_encode_exactly_as_the_plain_path(as_batch):
    """Fields and raw JSON, byte for byte, whether the events come in one request or one each."""
    raws = [_wire(e) for e in TRICKY]
    bodies = [b'{"events": [' + b", ".join(raws) + b"]}"] if as_batch else raws
    got: dict[str, list[dict]] = {}
    for body in bodies:
        batch = parse_events(split_body(body, LIMITS), SCOPES, LIMITS, POLICY)
        for stream, entry, entry_raws in stream_entries(batch, RECEIVED_AT, "k1"):
            got.setdefault(stream, []).append({STREAM_ENTRY_FIELD: entry, STREAM_RAW_FIELD: entry_raws})
    want = _plain_entries(raws)
    for stream, entries in got.items():  # one request per event: merge the one-event entries to compare
        merged = [decode_stream_entry(fields) for fields in entries]
        merged[0].events = [event for entry in merged for event in entry.events]
        assert encode_stream_entry(merged[0]) == want[stream]
    assert got.keys() == want.keys()
    assert [bytes(e.raw) for e in decode_stream_entry(want["ingest:events:user_interaction"]).events] == \
        [r for r in raws if r.startswith(b'{"user_interaction"')]  # raw JSON exactly as sent


def test_a_uniform_a_mixed_and_a_flawed_batch_get_the_same_results_as_one_by_one():
    good = [{"user_interaction": INTERACTION}] * 3
    mixed = [{"user_interaction": INTERACTION}, {"feedback_event": FEEDBACK}] * 2
    flawed = [*good, {"user_interaction": {"user_id": "u1"}}, 7, {"bogus": {}}, {}, {"feedback_event": FEEDBACK}]
    for events_ in (good, mixed, flawed):
        raws = split_body(json.dumps({"events": events_}).encode(), LIMITS)
        together = msgspec.json.encode(results(parse_events(raws, SCOPES, LIMITS, POLICY)))
        alone = [msgspec.json.decode(msgspec.json.encode(results(parse_events([raw], SCOPES, LIMITS, POLICY))))[0]
                 for raw in raws]
        for index, result in enumerate(alone):
            result["index"] = index
        assert msgspec.json.decode(together) == alone


def test_a_rejection_carries_its_event_type_when_known_else_unknown():
    """The label of gateway_events_total{outcome="rejected"}: never a name the client made up."""
    feedback_off = Policy(frozenset({"user_interaction"}))
    body = [{"user_interaction": {**INTERACTION, "user_id": 42}},  # wrong JSON type
            {"feedback_event": FEEDBACK},  # switched off
            {"made_up_type": {}}, 7, {"user_interaction": {**INTERACTION, "track_id": "x" * 40_000}},
            {"user_interaction": INTERACTION}]
    for raws in (split_body(json.dumps({"events": body}).encode(), LIMITS),  # decoded as a batch
                 [msgspec.Raw(json.dumps(event).encode()) for event in body]):
        batch = parse_events(raws, SCOPES, LIMITS, feedback_off)
        assert [(r.index, r.code, r.event_type) for r in batch.rejected] == [
            (0, "invalid_field", "user_interaction"), (1, "feedback_events_disabled", "feedback_event"),
            (2, "unknown_event_type", events.UNKNOWN_EVENT_TYPE), (3, "not_an_object", events.UNKNOWN_EVENT_TYPE),
            (4, "event_too_large", events.UNKNOWN_EVENT_TYPE)]
        assert batch.accepted_by_type == {"user_interaction": 1}


def test_generated_event_ids_are_uuid7_and_distinct():
    raws = split_body(json.dumps({"events": [{"user_interaction": {**INTERACTION, "event_id": None}}] * 50}).encode(),
                      LIMITS)
    batch = parse_events(raws, SCOPES, LIMITS, POLICY)
    ids = [event_id for _, event_id in batch.order]
    assert len(set(ids)) == 50 and all(re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}", i)
                                       for i in ids)
    entry = msgspec.json.decode(stream_entry_encoder.encode(batch.accepted["user_interaction"][0]))
    assert "event_id" not in entry["fields"]  # stamped on the record, not repeated in its fields


def test_received_at_text_is_iso_8601_utc_with_microseconds():
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", utc_now_iso())


def test_metric_tallies_reach_the_metrics_when_flushed():
    def value(name: str, **labels) -> float:
        text = metrics.exposition()[0].decode()  # flushes first
        wanted = "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else " "
        line = next((line for line in text.splitlines() if line.startswith(f"{name}{wanted}")), None)
        return float(line.rsplit(" ", 1)[1]) if line else 0.0

    before = [value("gateway_requests_total", route="/test", status="202"),
              value("gateway_redis_write_seconds_bucket", le="0.002"),
              value("gateway_redis_write_seconds_bucket", le="0.005"),
              value("gateway_redis_write_seconds_count")]
    metrics.count_request("/test", 202)
    metrics.count_request("/test", 202)
    metrics.observe_redis_write(0.003)
    after = [value("gateway_requests_total", route="/test", status="202"),
             value("gateway_redis_write_seconds_bucket", le="0.002"),  # below the observation: unchanged
             value("gateway_redis_write_seconds_bucket", le="0.005"),
             value("gateway_redis_write_seconds_count")]
    assert [a - b for a, b in zip(after, before)] == [2, 0, 1, 1]


def test_events_module_keeps_its_plain_path_for_the_dlq_replay():
    assert events.to_stream_event is to_stream_event
