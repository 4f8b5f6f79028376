"""Turning a request body into accepted stream records and per-event rejections.

The gateway rejects only what cannot be an event (malformed JSON, invalid UTF-8, not an object,
unknown or missing type, wrong JSON types, unknown fields, size and depth limits). Value-level
quality (enums, ranges, clock skew, empty or over-long ids) is validation's job downstream, unless
`strict` asks for it here too. Pure functions: no I/O, shared by HTTP and WebSocket.
"""

from __future__ import annotations

import functools
import operator
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import msgspec
import uuid_utils

from ingest_platform.contract import (
    EVENT_TYPES,
    MAX_ID_LENGTH,
    EventType,
    StreamEntry,
    StreamEvent,
    stream_entry_encoder,
)
from ingest_platform.validation import rules

_encode = msgspec.json.Encoder().encode
_object_decoder = msgspec.json.Decoder(dict[str, msgspec.Raw])
_list_decoder = msgspec.json.Decoder(list[msgspec.Raw])
_CONTROL = {c: None for c in range(0x20)} | {c: None for c in range(0x7F, 0xA0)}
# The event type of a rejection whose type could not be told (not an object, no or an unknown type,
# too large to decode): a fixed label, so a client's made-up type names never become metric labels.
UNKNOWN_EVENT_TYPE = "unknown"

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
    event_type: str = UNKNOWN_EVENT_TYPE  # one of the contract's types, or UNKNOWN_EVENT_TYPE


class ParsedBatch:
    """The outcome of parsing one request (a plain class: a dataclass with default factories costs
    a microsecond per request to build)."""

    __slots__ = ("size", "accepted", "raws", "order", "rejected", "accepted_by_type")

    def __init__(self, size: int = 0):
        self.size = size  # events in the request (accepted + rejected): the rate-limit cost
        self.accepted: dict[str, list[AcceptedEvent]] = {}  # event type -> events
        self.raws: dict[str, list[msgspec.Raw]] = {}  # event type -> their raw JSON, in the same order
        self.order: list[tuple[int, str]] = []  # (index, event_id) of accepted
        self.rejected: list[Rejection] = []
        self.accepted_by_type: dict[str, int] = {}


@dataclass(frozen=True)
class Limits:
    max_batch_events: int
    max_event_bytes: int
    max_body_bytes: int = 1024 * 1024


@dataclass(frozen=True)
class Policy:
    """What this gateway lets through beyond the contract's shape."""

    enabled_types: frozenset[str]
    strict: bool = False


def split_body(body: bytes, limits: Limits) -> list[msgspec.Raw]:
    """The raw events of a body holding one event or {"events": [...]}."""
    if len(body) > limits.max_body_bytes:
        raise BodyError(413, "body_too_large", f"a request body is at most {limits.max_body_bytes} bytes")
    if not body.isascii():
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BodyError(400, "invalid_utf8", f"body is not valid UTF-8: {exc.reason} at byte {exc.start}")
    try:
        top = _object_decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise BodyError(400, "not_an_object", f"body must be a JSON object: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise BodyError(400, "malformed_json", f"body is not valid JSON: {exc}") from exc
    except RecursionError:
        raise BodyError(400, "too_deep", "body nests JSON too deeply") from None
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


def parse_events(raws: list[msgspec.Raw], key_scopes: frozenset[str] | list[str], limits: Limits,
                 policy: Policy, received_at: datetime | None = None) -> ParsedBatch:
    """Accept or reject each raw event; accepted ones are sanitised and stamped with an event_id."""
    batch = ParsedBatch(size=len(raws))
    accepted, accepted_raws, order, rejected = batch.accepted, batch.raws, batch.order, batch.rejected
    permitted: set[str] = set()  # event types that passed the policy check in this request
    strict_now = (received_at or datetime.now(timezone.utc)) if policy.strict else None
    clean = _cleaner(raws)
    decoded = _decode_all(raws, limits)
    for index, raw in enumerate(raws):
        name = UNKNOWN_EVENT_TYPE  # until the event's type is decoded
        try:
            name, payload = _decode_event(raw, limits) if decoded is None else decoded[index]
            if name not in permitted:
                _check_policy(EVENT_TYPES[name], key_scopes, policy)
                permitted.add(name)
            record = _record(name, payload, raw, clean)
            if strict_now is not None:
                _check_values(EVENT_TYPES[name], record.event_id, msgspec.structs.asdict(payload), strict_now)
        except _Rejected as exc:
            rejected.append(Rejection(index, exc.code, exc.message, exc.event_type or name))
            continue
        events = accepted.get(name)
        if events is None:
            events = accepted[name] = []
            accepted_raws[name] = []
        events.append(record)
        accepted_raws[name].append(raw)
        order.append((index, record.event_id))
    batch.accepted_by_type = {name: len(events) for name, events in accepted.items()}
    return batch


class _Rejected(Exception):
    def __init__(self, code: str, message: str, event_type: str | None = None):
        # event_type: known although decoding failed (a payload with a wrong field)
        self.code, self.message, self.event_type = code, message, event_type


# Per event type, the contract's payload struct as the gateway decodes it: the same fields and
# checks, but encoding leaves out `event_id` once it is set to None. The decoded struct then serves
# as the record's "fields" as it is, without building a dict per event.
_FIELDS = {
    name: msgspec.defstruct(
        t.payload.__name__, [(f.name, f.type, f.default) if f.default is not msgspec.NODEFAULT else (f.name, f.type)
                             for f in msgspec.structs.fields(t.payload)],
        omit_defaults=True, forbid_unknown_fields=True)
    for name, t in EVENT_TYPES.items()
}
_payload_decoders = {name: msgspec.json.Decoder(fields) for name, fields in _FIELDS.items()}

# One decode for the common case: an object with one optional field per event type. Anything it
# refuses goes through `_classify`, which names the exact problem.
# UNSET (not None) as the default, so a present `null` (or a second key) never slips through.
_Envelope = msgspec.defstruct(
    "_Envelope", [(name, fields | msgspec.UnsetType, msgspec.UNSET) for name, fields in _FIELDS.items()],
    forbid_unknown_fields=True)
_envelope_decoder = msgspec.json.Decoder(_Envelope)
_envelopes_decoder = msgspec.json.Decoder(list[_Envelope])
# A batch usually holds one type of event: decoded as a list of that type only, it needs no
# per-event look at which type each envelope holds.
_uniform_decoders = {
    name: msgspec.json.Decoder(list[msgspec.defstruct(f"_Only_{name}", [(name, fields)], forbid_unknown_fields=True)])
    for name, fields in _FIELDS.items()
}


def _decode_all(raws: list[msgspec.Raw], limits: Limits) -> list[tuple[str, msgspec.Struct]] | None:
    """(event type, payload) of every event of a batch, in one decode, when all are well-formed and
    within size; else None, and each is decoded on its own to tell exactly which is wrong and why."""
    if len(raws) == 1 or any(len(raw) > limits.max_event_bytes for raw in raws):
        return None
    array = b"[" + b",".join(raws) + b"]"
    try:
        name, _ = _decode_event(raws[0], limits)
        payload_of = operator.attrgetter(name)
        return [(name, payload_of(only)) for only in _uniform_decoders[name].decode(array)]
    except (_Rejected, msgspec.ValidationError, RecursionError):
        pass  # a mixed batch, or a bad event somewhere
    try:
        return [_unwrap(envelope, raw) for envelope, raw in zip(_envelopes_decoder.decode(array), raws)]
    except (_Rejected, msgspec.ValidationError, RecursionError):
        return None


def _decode_event(raw: msgspec.Raw, limits: Limits) -> tuple[str, msgspec.Struct]:
    if len(raw) > limits.max_event_bytes:
        raise _Rejected("event_too_large", f"an event is at most {limits.max_event_bytes} bytes")
    try:
        envelope = _envelope_decoder.decode(raw)
    except (msgspec.ValidationError, RecursionError):
        return _classify(raw)
    return _unwrap(envelope, raw)


def _unwrap(envelope, raw: msgspec.Raw) -> tuple[str, msgspec.Struct]:
    """(event type, payload) of an envelope holding exactly one event."""
    found = None
    for name in _FIELDS:
        if getattr(envelope, name) is not msgspec.UNSET:
            if found is not None:
                return _classify(raw)
            found = name
    if found is None:
        return _classify(raw)
    return found, getattr(envelope, found)


def _classify(raw: msgspec.Raw) -> tuple[str, msgspec.Struct]:
    """The slow path: decode step by step to say precisely what is wrong."""
    try:
        wrapper = _object_decoder.decode(raw)
    except msgspec.ValidationError:
        raise _Rejected("not_an_object", 'an event is a JSON object like {"user_interaction": {...}}')
    except RecursionError:
        raise _Rejected("too_deep", "the event nests JSON too deeply")
    if len(wrapper) != 1:
        raise _Rejected("unknown_event_type", f"an event has exactly one key, one of {sorted(EVENT_TYPES)}")
    (name, inner), = wrapper.items()
    if name not in EVENT_TYPES:
        raise _Rejected("unknown_event_type", f"unknown event type {name[:64]!r}; expected one of {sorted(EVENT_TYPES)}")
    try:
        payload = _payload_decoders[name].decode(inner)
    except msgspec.ValidationError as exc:
        raise _Rejected("invalid_field", f"{name}: {exc}", name)
    except RecursionError:
        raise _Rejected("too_deep", "the event nests JSON too deeply", name)
    return name, payload


def _check_policy(event_type: EventType, key_scopes, policy: Policy) -> None:
    if event_type.name not in policy.enabled_types:
        raise _Rejected(f"{event_type.dataset}_disabled",
                        f"{event_type.name} ingestion is switched off on this platform")
    if event_type.name not in key_scopes:
        raise _Rejected("forbidden_event_type", f"this API key may not send {event_type.name}")


def _check_values(event_type: EventType, event_id: str, fields: dict, received_at: datetime) -> None:
    """Strict mode: every value-level problem of one event, reported together as `check: message`.

    The rules are validation's (`validation.rules`: the same enums, ranges, id charset and clock
    limits the drain applies with pandera), so strict mode rejects what would become a dead letter.
    """
    problems = []
    name = event_type.name
    for column in _ID_COLUMNS[name]:
        value = event_id if column == "event_id" else fields.get(column)
        if not 1 <= len(value) <= MAX_ID_LENGTH:
            problems.append(f"{rules.ID_LENGTH}: {column} must be 1-{MAX_ID_LENGTH} characters after trimming")
        elif not _ID_CHARSET.match(value):
            problems.append(f"{rules.ID_CHARSET}: {column} may hold only {rules.ID_CHARSET_TEXT}")
    for column, allowed in rules.ENUM_COLUMNS.items():
        if column in fields and fields[column] not in allowed:
            problems.append(f"{rules.enum_check(column)}: {column} must be one of {list(allowed)}")
    if "rating" in fields and fields.get("feedback_type") in rules.RATING_RANGES:
        low, high = rules.RATING_RANGES[fields["feedback_type"]]
        if not low <= fields["rating"] <= high:
            problems.append(f"{rules.RATING_IN_RANGE}: {fields['feedback_type']} ratings are {low:g}-{high:g}")
    quality = _quality_rules()
    for column in _TIMESTAMP_FIELDS[name]:
        try:
            instant = datetime.fromisoformat(fields[column])
        except ValueError:
            problems.append(f"{rules.TIMESTAMP_PARSEABLE}: {column} is not an ISO 8601 timestamp")
            continue
        if instant.tzinfo is None:
            instant = instant.replace(tzinfo=timezone.utc)
        if instant > received_at + quality.max_ahead:
            problems.append(f"{rules.TIMESTAMP_NOT_AHEAD}: {column} is more than "
                            f"{quality.max_ahead.total_seconds():g} s ahead of the server clock")
        elif instant < received_at - quality.max_age:
            problems.append(f"{rules.TIMESTAMP_WITHIN_HORIZON}: {column} is more than {quality.max_age} old")
    if problems:
        raise _Rejected("invalid_value", "; ".join(problems))


@functools.lru_cache(maxsize=1)
def _quality_rules() -> rules.QualityRules:
    return rules.QualityRules.from_settings()


_ID_COLUMNS = {name: rules.id_columns(name) for name in EVENT_TYPES}
_ID_CHARSET = re.compile(rules.ID_CHARSET_PATTERN)


# (field name, is a timestamp) per event type. Computed once: the contract's properties re-read the
# struct's annotations on every call, which would dominate the per-event cost.
_FIELD_PLANS = {
    name: tuple((f, f in t.timestamp_fields) for f in t.payload_fields) for name, t in EVENT_TYPES.items()
}
_TIMESTAMP_FIELDS = {name: t.timestamp_fields for name, t in EVENT_TYPES.items()}
_OTHER_FIELDS = {name: tuple(f for f in t.payload_fields if f not in t.timestamp_fields) for name, t in EVENT_TYPES.items()}


class AcceptedEvent(msgspec.Struct):
    """An accepted event as the gateway buffers it: encodes exactly as `contract.StreamEvent` on
    the stream (whose raw JSON travels apart), but `fields` is the decoded payload struct itself
    (its event_id set to None, so left out)."""

    event_id: str
    fields: Any


def _record(name: str, payload: msgspec.Struct, raw: msgspec.Raw, clean: Callable[[str], str] | None) -> AcceptedEvent:
    """The hot path's `to_stream_event`: the same sanitising, in place on the decoded struct."""
    if clean is None:
        clean = _cleaner([raw])
    for field in _OTHER_FIELDS[name]:
        value = getattr(payload, field)
        if value.__class__ is str:
            setattr(payload, field, clean(value))
    for field in _TIMESTAMP_FIELDS[name]:
        setattr(payload, field, normalise_timestamp(getattr(payload, field)))
    event_id = payload.event_id
    if event_id is None:
        event_id = str(uuid_utils.uuid7())
    else:
        event_id, payload.event_id = clean(event_id), None
    return AcceptedEvent(event_id, payload)


def _cleaner(raws: list[msgspec.Raw]) -> Callable[[str], str] | None:
    """str.strip when every event is plain ASCII; None: decide per event.

    JSON forbids raw control characters in strings, so ASCII without escapes or DEL holds no
    control character and is already NFC: its strings only need trimming."""
    data = bytes(raws[0]) if len(raws) == 1 else b"".join(raws)
    if data.isascii() and b"\\" not in data and b"\x7f" not in data:
        return str.strip
    return None if len(raws) > 1 else sanitise


def to_stream_event(event_type: EventType, payload: msgspec.Struct, raw: msgspec.Raw) -> StreamEvent:
    """The record of one decoded event, with its fields as a dict (the DLQ replay's way in)."""
    clean = _cleaner([raw])
    fields = msgspec.structs.asdict(payload)
    event_id = fields.pop("event_id")
    for name, is_timestamp in _FIELD_PLANS[event_type.name]:
        value = fields[name]
        if value.__class__ is str:
            fields[name] = normalise_timestamp(value) if is_timestamp else clean(value)
    event_id = clean(event_id) if event_id is not None else str(uuid_utils.uuid7())
    return StreamEvent(event_id=event_id, fields=fields, raw=raw)


def sanitise(value: str) -> str:
    """NFC, no control characters, no surrounding whitespace.

    Ids longer than MAX_ID_LENGTH are not truncated (that could merge two ids): validation turns
    them into dead letters with the reason (strict mode rejects them here).
    """
    if value.isascii() and value.isprintable():  # the common case: nothing to normalise
        return value.strip()
    return unicodedata.normalize("NFC", value).translate(_CONTROL).strip()


_timestamp_cache: dict[str, str] = {}


def normalise_timestamp(value: str) -> str:
    """ISO 8601 in UTC (`...Z`); a value that does not parse is kept for validation to reject."""
    cached = _timestamp_cache.get(value)
    if cached is not None:
        return cached
    stripped = value.strip()
    try:
        parsed = datetime.fromisoformat(stripped)
    except ValueError:
        return stripped
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)  # documented: an instant without offset is UTC
    try:
        in_utc = parsed.astimezone(timezone.utc)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+14:00 lies before year 1 in UTC
        return stripped
    normalised = in_utc.isoformat(timespec="microseconds").replace("+00:00", "Z")
    if len(_timestamp_cache) > 4096:  # clients in one batch share timestamps; keep the cache small
        _timestamp_cache.clear()
    _timestamp_cache[value] = normalised
    return normalised


def stream_entries(batch: ParsedBatch, received_at: str, api_key_id: str) -> list[tuple[str, bytes, bytes]]:
    """(stream, STREAM_ENTRY_FIELD value, STREAM_RAW_FIELD value) per event type: what
    `contract.encode_stream_entry` makes of the same events, without building StreamEvents."""
    return [
        (EVENT_TYPES[name].stream, stream_entry_encoder.encode(StreamEntry(name, received_at, api_key_id, events)),
         stream_entry_encoder.encode(batch.raws[name]))
        for name, events in batch.accepted.items()
    ]


class AcceptedResult(msgspec.Struct):
    """`{"index", "status": "accepted", "event_id"}` in a response (a struct encodes faster than a dict)."""

    index: int
    status: str
    event_id: str


class RejectedResult(msgspec.Struct):
    index: int
    status: str
    code: str
    reason: str


def results(batch: ParsedBatch) -> list[AcceptedResult | RejectedResult]:
    """Per-event results in request order."""
    out: list = [None] * batch.size
    for index, event_id in batch.order:
        out[index] = AcceptedResult(index, "accepted", event_id)
    for r in batch.rejected:
        out[r.index] = RejectedResult(r.index, "rejected", r.code, r.message)
    return out


def encode_results(batch: ParsedBatch) -> tuple[int, bytes]:
    """The HTTP status and JSON body answering `batch`."""
    body = {"accepted": len(batch.order), "rejected": len(batch.rejected), "results": results(batch)}
    return (202 if batch.order else rejected_status(batch)), _encode(body)


def rejected_status(batch: ParsedBatch) -> int:
    """Status of a request with nothing accepted: 403 when only scopes stood in the way, else 422."""
    return 403 if all(r.code == "forbidden_event_type" for r in batch.rejected) else 422
