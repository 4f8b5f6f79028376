"""Draining one stream: a fixed id range -> decode -> validate -> Parquet (valid rows + dead letters).

`drain_stream` plans a range (or resumes the unfinished plan), writes every file of it, then
commits the cursor. Everything written is a pure function of the entries in the range, so a retry
after a crash, or a second drain racing the first, rewrites the same files with the same rows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import polars as pl
import pyarrow as pa

from ingest_platform.contract import (
    DEAD_LETTER_DATASET,
    EVENT_TYPES,
    STREAM_ENTRY_FIELD,
    EventType,
    stream_entry_decoder,
)
from ingest_platform.dlq.dead_letters import dead_letter_table
from ingest_platform.storage.event_log import DrainLog, StreamRange, entry_ms
from ingest_platform.storage.lake import hour_of_ms, partition_dir, write_parquet_atomic
from ingest_platform.validation.split import split_valid_rows

# A file is cut when the hour changes or when it holds this many events: memory stays O(this).
FILE_TARGET_EVENTS = 250_000
ISO_UTC = "%Y-%m-%dT%H:%M:%S%.fZ"


class InvalidRowsError(RuntimeError):
    """Raised when rows fail validation and dead-letter handling is switched off."""


@dataclass
class LandedFile:
    dataset: str
    hour: datetime
    path: Path
    rows: int
    bytes: int
    first_id: str
    last_id: str


@dataclass
class DrainReport:
    range: StreamRange
    entries: int = 0
    valid: int = 0
    dead: int = 0
    files: list[LandedFile] = field(default_factory=list)
    oldest_entry_ms: int | None = None

    @property
    def lag_seconds(self) -> float:
        """Age of the oldest entry drained, at the time of the report."""
        return 0.0 if self.oldest_entry_ms is None else max(0.0, time.time() - self.oldest_entry_ms / 1000)


@dataclass
class _Chunk:
    """Entries of one hour, decoded into column lists."""

    hour_ms: int
    first_id: str = ""
    last_id: str = ""
    entries: int = 0
    columns: dict[str, list] = field(default_factory=dict)


def drain_all_streams(log: DrainLog, lake: Path, max_entries: int,
                      dead_letters_enabled: bool = True) -> list[DrainReport]:
    """Drain every event stream once. Streams of switched-off event types are drained too, so
    entries accepted before a flag changed are never stranded."""
    reports = []
    for event_type in EVENT_TYPES.values():
        report = drain_stream(log, event_type, lake, max_entries, dead_letters_enabled)
        if report is not None:
            reports.append(report)
    return reports


def drain_stream(log: DrainLog, event_type: EventType, lake: Path, max_entries: int,
                 dead_letters_enabled: bool = True) -> DrainReport | None:
    """Drain the next range of `event_type`'s stream; None when there is nothing new."""
    rng = log.plan_next_range(event_type.stream, max_entries)
    if rng is None:
        return None
    report = drain_stream_range(log, event_type, rng, lake, dead_letters_enabled)
    log.commit(rng, report.entries)
    return report


def drain_stream_range(log: DrainLog, event_type: EventType, rng: StreamRange, lake: Path,
                       dead_letters_enabled: bool = True) -> DrainReport:
    """Write every file for the entries in `rng`; does not move the cursor."""
    report = DrainReport(range=rng)
    for chunk in _chunks(log, event_type, rng):
        report.entries += chunk.entries
        if report.oldest_entry_ms is None:
            report.oldest_entry_ms = entry_ms(chunk.first_id)
        _land_chunk(event_type, chunk, lake, report, dead_letters_enabled)
    return report


def _chunks(log: DrainLog, event_type: EventType, rng: StreamRange):
    names = ("event_id", *event_type.payload_fields, "received_at", "api_key_id", "stream_id", "raw_payload")
    chunk: _Chunk | None = None
    events = 0
    for entry_id, fields in log.read_range(rng):
        hour_ms = entry_ms(entry_id) // 3_600_000 * 3_600_000
        if chunk is None or hour_ms != chunk.hour_ms or events >= FILE_TARGET_EVENTS:
            if chunk is not None:
                yield chunk
            chunk, events = _Chunk(hour_ms, first_id=entry_id, columns={n: [] for n in names}), 0
        entry = stream_entry_decoder.decode(fields[STREAM_ENTRY_FIELD])
        cols = chunk.columns
        for index, event in enumerate(entry.events):
            cols["event_id"].append(event.event_id)
            for name in event_type.payload_fields:
                cols[name].append(event.fields.get(name))
            cols["received_at"].append(entry.received_at)
            cols["api_key_id"].append(entry.api_key_id)
            cols["stream_id"].append(f"{entry_id}/{index}")
            cols["raw_payload"].append(bytes(event.raw).decode())
        events += len(entry.events)
        chunk.entries += 1
        chunk.last_id = entry_id
    if chunk is not None:
        yield chunk


def _frame(event_type: EventType, chunk: _Chunk) -> pl.DataFrame:
    lake_types = {f.name: f.type for f in event_type.arrow_schema}
    schema = {n: pl.Float64 if lake_types.get(n) == pa.float64() else pl.String for n in chunk.columns}
    frame = pl.DataFrame(chunk.columns, schema=schema)
    parse = [pl.col(n).str.to_datetime(ISO_UTC, time_unit="us", time_zone="UTC", strict=False)
             for n in (*event_type.timestamp_fields, "received_at")]
    return frame.with_columns(parse)


def _land_chunk(event_type: EventType, chunk: _Chunk, lake: Path, report: DrainReport,
                dead_letters_enabled: bool) -> None:
    split = split_valid_rows(event_type.name, _frame(event_type, chunk))
    if split.rejected.height and not dead_letters_enabled:
        raise InvalidRowsError(
            f"{split.rejected.height} of {chunk.entries} entries' events in {event_type.stream} "
            f"({chunk.first_id}..{chunk.last_id}) failed validation and ENABLE_DLQ_HANDLING is off; "
            "they stay in Redis until dead-letter handling is switched on or the data is fixed"
        )
    hour = hour_of_ms(chunk.hour_ms)
    name = f"{chunk.first_id}_{chunk.last_id}.parquet"
    if split.valid.height:
        table = split.valid.select(event_type.arrow_schema.names).to_arrow().cast(event_type.arrow_schema)
        path = partition_dir(lake, event_type.dataset, hour) / name
        report.files.append(LandedFile(event_type.dataset, hour, path, table.num_rows,
                                       write_parquet_atomic(table, path), chunk.first_id, chunk.last_id))
        report.valid += table.num_rows
    if split.rejected.height:
        rejected_by = f"{event_type.stream}:{chunk.first_id}_{chunk.last_id}"
        table = dead_letter_table(split.rejected, event_type.name, rejected_by)
        path = partition_dir(lake, DEAD_LETTER_DATASET, hour) / f"{event_type.name}_{name}"
        report.files.append(LandedFile(DEAD_LETTER_DATASET, hour, path, table.num_rows,
                                       write_parquet_atomic(table, path), chunk.first_id, chunk.last_id))
        report.dead += table.num_rows
