"""Putting events into a real Redis the way the gateway does, and draining them with the sensor."""

from __future__ import annotations

from datetime import datetime, timezone

import dagster as dg
import msgspec
import redis

from ingest_platform.contract import EVENT_TYPES, StreamEntry, encode_stream_entry
from ingest_platform.defs.ingestion.sensors import drain_event_streams
from ingest_platform.defs.resources import resources_from_settings
from ingest_platform.gateway.events import to_stream_event
from ingest_platform.settings import get_settings
from ingest_platform.storage.event_log import append_entries_sync

RECEIVED = datetime(2026, 11, 26, 10, 0, tzinfo=timezone.utc)
RECEIVED_ISO = "2026-11-26T10:00:00.000000Z"


def interaction(**fields) -> dict:
    payload = {"user_id": "u1", "session_id": "s1", "track_id": "t1", "action": "play",
               "timestamp": "2026-11-26T09:59:00Z"} | fields
    return {"user_interaction": payload}


def feedback(**fields) -> dict:
    payload = {"user_id": "u1", "recommendation_id": "r1", "feedback_type": "explicit", "rating": 4.0,
               "timestamp": "2026-11-26T09:59:00Z"} | fields
    return {"feedback_event": payload}


def enqueue(client: redis.Redis, events: list[dict | str], received_at: str = RECEIVED_ISO,
            api_key_id: str = "k_test") -> list[str]:
    """Append `events` as the gateway would (one entry per type); returns their event ids in order.
    An event given as JSON text is kept as its raw payload exactly as written (a client's own
    formatting); a dict is encoded compactly."""
    by_type: dict[str, list] = {}
    ids = []
    for event in events:
        raw = event.encode() if isinstance(event, str) else msgspec.json.encode(event)
        (name, payload), = msgspec.json.decode(raw).items()
        event_type = EVENT_TYPES[name]
        record = to_stream_event(event_type, msgspec.convert(payload, event_type.payload), msgspec.Raw(raw))
        by_type.setdefault(name, []).append(record)
        ids.append(record.event_id)
    entries = [(EVENT_TYPES[name].stream, encode_stream_entry(StreamEntry(name, received_at, api_key_id, records)))
               for name, records in by_type.items()]
    append_entries_sync(client, entries)
    return ids


def run_drain_sensor(instance: dg.DagsterInstance | None = None) -> dg.SensorResult:
    """One tick of the real drain sensor against the test's Redis and data dir."""
    resources = resources_from_settings(get_settings())
    if instance is None:
        with dg.instance_for_test() as own, dg.build_sensor_context(instance=own, resources=resources) as context:
            return drain_event_streams(context)
    with dg.build_sensor_context(instance=instance, resources=resources) as context:
        return drain_event_streams(context)


def check_results(result: dg.SensorResult) -> dict[tuple[str, str], list[dg.AssetCheckEvaluation]]:
    found: dict[tuple[str, str], list] = {}
    for event in result.asset_events:
        if isinstance(event, dg.AssetCheckEvaluation):
            found.setdefault((event.asset_key.to_user_string(), event.check_name), []).append(event)
    return found
