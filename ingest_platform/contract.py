"""The event contract: the one place that says what an event is.

Gateway parsing (msgspec structs), the stream record format, the pandera schemas, the Arrow/Parquet
schemas of the lake and the DuckDB views all derive from the definitions here; nothing restates a
field list.

An event on the wire is an object with exactly one key, its type::

    {"user_interaction": {"user_id": "u1", "session_id": "s1", "track_id": "t1",
                          "action": "play", "timestamp": "2026-11-26T10:00:00Z"}}
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any

import msgspec
import pyarrow as pa


class Action(StrEnum):
    PLAY = "play"
    PAUSE = "pause"
    SKIP = "skip"
    LIKE = "like"
    DISLIKE = "dislike"


class FeedbackType(StrEnum):
    EXPLICIT = "explicit"
    IMPLICIT = "implicit"


class _Timestamp:
    """Marks a string field that carries an ISO 8601 instant (stored as a UTC timestamp)."""


Timestamp = Annotated[str, _Timestamp]

# Ids are free-form strings from client apps; the gateway caps their length after sanitising.
MAX_ID_LENGTH = 128


# --- what clients send (one struct per event type) --------------------------------------------
# Value-level rules (enums, ranges, clock skew) are deliberately *not* enforced by these types:
# that is validation's job, so a bad value becomes a dead letter with its reasons instead of a
# lost event. The types only say what could possibly be an event.


class UserInteraction(msgspec.Struct, forbid_unknown_fields=True):
    """A listening interaction: play, pause, skip, like or dislike of a track."""

    user_id: str
    session_id: str
    track_id: str
    action: str
    timestamp: Timestamp
    event_id: str | None = None


class FeedbackEvent(msgspec.Struct, forbid_unknown_fields=True):
    """Feedback on a served recommendation: an explicit rating (1-5) or an implicit signal (0-1)."""

    user_id: str
    recommendation_id: str
    feedback_type: str
    rating: float
    timestamp: Timestamp
    event_id: str | None = None


# --- what the gateway stamps on every accepted event ------------------------------------------

ENVELOPE_FIELDS: dict[str, pa.DataType] = {
    "received_at": pa.timestamp("us", tz="UTC"),
    "api_key_id": pa.string(),
    "stream_id": pa.string(),  # "<stream entry id>/<index in entry>": where it was buffered
}


@dataclass(frozen=True)
class EventType:
    """One kind of event and every name derived from it."""

    name: str  # the wire key, e.g. "user_interaction"
    dataset: str  # lake dataset and warehouse view, e.g. "user_interactions"
    payload: type[msgspec.Struct]

    @property
    def stream(self) -> str:
        return f"ingest:events:{self.name}"

    @property
    def payload_fields(self) -> tuple[str, ...]:
        """Contract fields except event_id, in declaration order."""
        return tuple(f.name for f in msgspec.structs.fields(self.payload) if f.name != "event_id")

    @property
    def timestamp_fields(self) -> tuple[str, ...]:
        return tuple(
            f.name for f in msgspec.structs.fields(self.payload) if _is_timestamp(f.type)
        )

    @property
    def arrow_schema(self) -> pa.Schema:
        """Schema of the lake dataset (valid rows); hive columns date/hour come from the path."""
        fields = [pa.field("event_id", pa.string(), nullable=False)]
        for f in msgspec.structs.fields(self.payload):
            if f.name != "event_id":
                fields.append(pa.field(f.name, _arrow_type(f.type)))
        fields += [pa.field(name, type_) for name, type_ in ENVELOPE_FIELDS.items()]
        return pa.schema(fields)


def _is_timestamp(annotation: Any) -> bool:
    return _Timestamp in getattr(annotation, "__metadata__", ())


def _arrow_type(annotation: Any) -> pa.DataType:
    if _is_timestamp(annotation):
        return pa.timestamp("us", tz="UTC")
    if annotation is float:
        return pa.float64()
    if annotation is int:
        return pa.int64()
    return pa.string()


USER_INTERACTION = EventType("user_interaction", "user_interactions", UserInteraction)
FEEDBACK_EVENT = EventType("feedback_event", "feedback_events", FeedbackEvent)

EVENT_TYPES: dict[str, EventType] = {t.name: t for t in (USER_INTERACTION, FEEDBACK_EVENT)}

DEAD_LETTER_DATASET = "dead_letter_events"

DEAD_LETTER_SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.string()),
        pa.field("event_type", pa.string()),
        pa.field("stream_id", pa.string()),
        pa.field("received_at", pa.timestamp("us", tz="UTC")),
        pa.field("api_key_id", pa.string()),
        pa.field("raw_payload", pa.string()),  # the event exactly as the client sent it
        pa.field(
            "failures",
            pa.list_(
                pa.struct(
                    [
                        ("check", pa.string()),
                        ("column", pa.string()),
                        ("value", pa.string()),
                        ("message", pa.string()),
                    ]
                )
            ),
        ),
        pa.field("rejected_by", pa.string()),  # the drain range (run) that rejected it
        pa.field("replay_status", pa.string()),  # "pending" until replayed
    ]
)


# --- the stream record: what the gateway appends and the drain reads ---------------------------
# One stream entry holds every accepted event of one type from one request, so a 500-event batch
# costs one XADD. It has two fields:
#   STREAM_ENTRY_FIELD  the entry (StreamEntry as JSON) with each event's sanitised `fields`;
#   STREAM_RAW_FIELD    a JSON array of the events' raw JSON, in the order of `events`, copied
#                       verbatim (msgspec.Raw is never re-encoded) for the dead-letter queue's
#                       "payload exactly as received".
# The raws travel apart so that the drain decodes only the fields (the raws doubled the JSON it
# parsed) and reaches one dead letter's raw without scanning the fields. Entries written before the
# split carry each raw inside its event and have no STREAM_RAW_FIELD; `decode_stream_entry` reads both.

NO_RAW = msgspec.Raw(b"null")


class StreamEvent(msgspec.Struct, omit_defaults=True):
    event_id: str
    fields: dict[str, Any]
    raw: msgspec.Raw = NO_RAW  # on the stream: in STREAM_RAW_FIELD (inline only in older entries)


class StreamEntry(msgspec.Struct):
    event_type: str
    received_at: str
    api_key_id: str
    events: list[StreamEvent]


STREAM_ENTRY_FIELD = b"entry"
STREAM_RAW_FIELD = b"raw"

stream_entry_encoder = msgspec.json.Encoder()
stream_entry_decoder = msgspec.json.Decoder(StreamEntry)
stream_raws_decoder = msgspec.json.Decoder(list[msgspec.Raw])


def encode_stream_entry(entry: StreamEntry) -> dict[bytes, bytes]:
    """The XADD fields of `entry`."""
    events = [StreamEvent(event.event_id, event.fields) for event in entry.events]
    head = StreamEntry(entry.event_type, entry.received_at, entry.api_key_id, events)
    return {STREAM_ENTRY_FIELD: stream_entry_encoder.encode(head),
            STREAM_RAW_FIELD: stream_entry_encoder.encode([event.raw for event in entry.events])}


def decode_stream_entry(fields: dict[bytes, bytes]) -> StreamEntry:
    """A stream entry's fields back into a StreamEntry, each event with its raw JSON."""
    entry = stream_entry_decoder.decode(fields[STREAM_ENTRY_FIELD])
    if STREAM_RAW_FIELD in fields:
        raws = stream_raws_decoder.decode(fields[STREAM_RAW_FIELD])
        if len(raws) != len(entry.events):
            raise ValueError(f"a stream entry holds {len(entry.events)} events but {len(raws)} raw payloads")
        for event, raw in zip(entry.events, raws):
            event.raw = raw
    return entry
