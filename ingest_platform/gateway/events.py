"""Turning a request body into accepted stream records and per-event rejections.

The gateway rejects only what cannot be an event (malformed JSON, not an object, unknown or missing
type, wrong JSON types, unknown fields, size limits). Value-level quality (enums, ranges, clock
skew, empty ids) is validation's job downstream, unless `strict` asks for it here too.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from datetime import datetime, timezone

import msgspec
import uuid_utils

from ingest_platform.contract import (
    EVENT_TYPES,
    EventType,
    StreamEntry,
    StreamEvent,
)

_object_decoder = msgspec.json.Decoder(dict[str, msgspec.Raw])
_list_decoder = msgspec.json.Decoder(list[msgspec.Raw])
_payload_decoders = {name: msgspec.json.Decoder(t.payload) for name, t in EVENT_TYPES.items()}
_CONTROL = {c: None for c in range(0x20)} | {0x7F: None}


class BodyError(Exception):
    """The request as a whole cannot be read: nothing in it is accepted."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class Rejection:
    index: int
    code: str
    message: str


@dataclass
class ParsedBatch:
    accepted: dict[str, list[StreamEvent]] = field(default_factory=dict)  # event type -> events
    order: list[tuple[int, str]] = field(default_factory=list)  # (index, event_id) of accepted
    rejected: list[Rejection] = field(default_factory=list)


@dataclass(frozen=True)
class Limits:
    max_batch_events: int
    max_event_bytes: int


def split_body(body: bytes, limits: Limits) -> list[msgspec.Raw]:
    """The raw events of a body holding one event or {"events": [...]}."""
    try:
        top = _object_decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise BodyError(400, "not_an_object", f"body must be a JSON object: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise BodyError(400, "malformed_json", f"body is not valid JSON: {exc}") from exc
    if "events" not in top:
        return [msgspec.Raw(body)]
    if len(top) != 1:
        raise BodyError(400, "invalid_batch", 'a batch is {"events": [...]} with no other keys')
    try:
        events = _list_decoder.decode(top["events"])
    except msgspec.ValidationError as exc:
        raise BodyError(400, "invalid_batch", f'"events" must be an array: {exc}') from exc
    if not events:
        raise BodyError(422, "empty_batch", '"events" holds no event')
    if len(events) > limits.max_batch_events:
        raise BodyError(413, "too_many_events", f"a batch holds at most {limits.max_batch_events} events")
    return events


def parse_events(raws: list[msgspec.Raw], key_scopes: frozenset[str], limits: Limits,
                 enabled_types: frozenset[str]) -> ParsedBatch:
    batch = ParsedBatch()
    for index, raw in enumerate(raws):
        try:
            event_type, payload = _decode_event(raw, limits)
        except _Rejected as exc:
            batch.rejected.append(Rejection(index, exc.code, exc.message))
            continue
        if event_type.name not in enabled_types:
            batch.rejected.append(Rejection(index, f"{event_type.dataset}_disabled",
                                            f"{event_type.name} ingestion is switched off on this platform"))
            continue
        if event_type.name not in key_scopes:
            batch.rejected.append(Rejection(index, "forbidden_event_type",
                                            f"this API key may not send {event_type.name}"))
            continue
        record = to_stream_event(event_type, payload, raw)
        batch.accepted.setdefault(event_type.name, []).append(record)
        batch.order.append((index, record.event_id))
    return batch


class _Rejected(Exception):
    def __init__(self, code: str, message: str):
        self.code, self.message = code, message


def _decode_event(raw: msgspec.Raw, limits: Limits) -> tuple[EventType, msgspec.Struct]:
    if len(raw) > limits.max_event_bytes:
        raise _Rejected("event_too_large", f"an event is at most {limits.max_event_bytes} bytes")
    try:
        wrapper = _object_decoder.decode(raw)
    except msgspec.ValidationError:
        raise _Rejected("not_an_object", "an event is a JSON object like {\"user_interaction\": {...}}")
    if len(wrapper) != 1:
        raise _Rejected("unknown_event_type", f"an event has exactly one key, one of {sorted(EVENT_TYPES)}")
    (name, inner), = wrapper.items()
    if name not in EVENT_TYPES:
        raise _Rejected("unknown_event_type", f"unknown event type {name!r}; expected one of {sorted(EVENT_TYPES)}")
    try:
        return EVENT_TYPES[name], _payload_decoders[name].decode(inner)
    except msgspec.ValidationError as exc:
        raise _Rejected("invalid_field", f"{name}: {exc}")


def to_stream_event(event_type: EventType, payload: msgspec.Struct, raw: msgspec.Raw) -> StreamEvent:
    fields = {}
    for name in event_type.payload_fields:
        value = getattr(payload, name)
        if isinstance(value, str):
            value = normalise_timestamp(value) if name in event_type.timestamp_fields else sanitise(value)
        fields[name] = value
    event_id = sanitise(payload.event_id) if payload.event_id else str(uuid_utils.uuid7())
    return StreamEvent(event_id=event_id, fields=fields, raw=raw)


def sanitise(value: str) -> str:
    """NFC, no control characters, no surrounding whitespace.

    Ids longer than MAX_ID_LENGTH are not truncated (that could merge two ids): validation turns
    them into dead letters with the reason.
    """
    return unicodedata.normalize("NFC", value).translate(_CONTROL).strip()


def normalise_timestamp(value: str) -> str:
    """ISO 8601 in UTC (`...Z`); a value that does not parse is kept for validation to reject."""
    value = value.strip()
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return value
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)  # documented: an instant without offset is UTC
    return parsed.astimezone(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def stream_entries(batch: ParsedBatch, received_at: str, api_key_id: str) -> list[tuple[str, StreamEntry]]:
    return [
        (EVENT_TYPES[name].stream, StreamEntry(name, received_at, api_key_id, events))
        for name, events in batch.accepted.items()
    ]
