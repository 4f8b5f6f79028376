"""Real Dagster materialisations of an ingestion hour, and the check results the instance records.

Events go into Redis at a chosen instant (the entry id, hence the lake hour and the partition), the
drain sensor lands and commits them, and `materialise_hour` runs `landed_events` (what a backfill
of the hour runs) with, by default, `data_quality_checks` in the same run.
"""

from __future__ import annotations

import shutil
from datetime import datetime, timezone

import dagster as dg
import msgspec
import redis

from ingest_platform.contract import EVENT_TYPES, StreamEntry, encode_stream_entry
from ingest_platform.defs.ingestion.assets import landed_events
from ingest_platform.defs.quality.checks import data_quality_checks
from ingest_platform.defs.resources import resources_from_settings
from ingest_platform.gateway.events import to_stream_event
from ingest_platform.settings import get_settings

from .helpers import RECEIVED_ISO

HOUR_10 = datetime(2026, 11, 26, 10, 30, tzinfo=timezone.utc)
HOUR_10_KEY = "2026-11-26-10:00"


def enqueue_at(client: redis.Redis, events: list[dict], at: datetime = HOUR_10,
               received_at: str = RECEIVED_ISO) -> list[str]:
    """Append `events` (one entry per type) as if the gateway had at `at`; returns their event ids.

    A payload field given as None is left out of the stream record, as a producer other than the
    gateway (which refuses such an event) could write it: the drain sees a missing value."""
    by_type: dict[str, list] = {}
    ids = []
    for event in events:
        (name, payload), = event.items()
        event_type = EVENT_TYPES[name]
        missing = [field for field, value in payload.items() if value is None]
        filled = {field: "placeholder" if value is None else value for field, value in payload.items()}
        record = to_stream_event(event_type, msgspec.convert(filled, event_type.payload),
                                 msgspec.Raw(msgspec.json.encode(event)))
        for field in missing:
            record.fields.pop(field)
        by_type.setdefault(name, []).append(record)
        ids.append(record.event_id)
    for name, records in by_type.items():
        client.xadd(EVENT_TYPES[name].stream, encode_stream_entry(StreamEntry(name, received_at, "k_test", records)),
                    id=f"{int(at.timestamp() * 1000)}-*")
    return ids


def forget_landed_data() -> None:
    """Delete the lake and the warehouse, as if the files were lost: the Redis entries remain."""
    settings = get_settings()
    shutil.rmtree(settings.lake_dir, ignore_errors=True)
    settings.warehouse_path.unlink(missing_ok=True)


def materialise_hour(instance: dg.DagsterInstance, partition_key: str = HOUR_10_KEY,
                     with_checks: bool = True) -> dg.ExecuteInProcessResult:
    assets = [landed_events, data_quality_checks] if with_checks else [landed_events]
    return dg.materialize(assets, partition_key=partition_key, instance=instance,
                          resources=resources_from_settings(get_settings()))


def run_evaluations(result: dg.ExecuteInProcessResult, dataset: str, check: str) -> list[dg.AssetCheckEvaluation]:
    return [e for e in result.get_asset_check_evaluations()
            if e.asset_key == dg.AssetKey(dataset) and e.check_name == check]


def recorded_evaluation(instance: dg.DagsterInstance, dataset: str, check: str):
    """The latest execution of a check as the instance recorded it (what the UI shows): (record,
    its evaluation)."""
    key = dg.AssetCheckKey(dg.AssetKey(dataset), check)
    record = instance.event_log_storage.get_latest_asset_check_execution_by_key([key])[key]
    return record, record.event.dagster_event.event_specific_data
