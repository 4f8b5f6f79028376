"""Replay: re-drain a range still retained in Redis, landing only what the lake is missing.

Use it after files were lost or deleted (or to rebuild an hour). The normal drain decides
duplicates with its Redis claims; replay decides them against the lake itself, because the claims
only cover about two hours and replay reaches back the whole retention:

- an occurrence whose `stream_id` is already in the lake (valid rows, or this type's dead letters)
  is already landed: skipped;
- otherwise the drain's rule (`dedup`), with the lake's rows of the occurrence's hour and the hour
  before as the earlier occurrences: a valid occurrence lands unless its `event_id` is already a
  valid row; a dead letter lands unless a valid row of its `event_id` comes before it or the same
  letter (event_id, payload, reasons) is already there;
- a letter for an event_id reused inside its chunk (`event_id_unique_in_batch`) is the drain's
  verdict only if the drain saw it in one batch with its valid twin. Replay cuts chunks from the
  start of the range, not along the drain's batches, so a twin already in the lake in a file
  whose entry range (`<first>_<last>` in its name) does not hold the letter was in another batch,
  where the drain dropped the letter as a duplicate (the event_id is an idempotency key across
  batches): dropped here too. It lands when the twin is in the same file range, or was missing
  and lands with it now. A twin in a compacted file (no range in its name) drops the letter:
  backfilling an intact hour writes nothing.

Only entries at or below the committed cursor are replayed (the drain owns the rest), and replay
holds the lake maintenance lock, so compaction never runs beside it. Replay files are named
`replay_<first>_<last>_<digest of their stream_ids>.parquet`: a second replay of the same range
finds every row present and writes nothing; a replay interrupted by a crash lands the rest next
time; two replays never overwrite each other's different contents.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from ingest_platform.contract import DEAD_LETTER_DATASET, EventType
from ingest_platform.dlq.dead_letters import dead_letter_table
from ingest_platform.drain import dedup
from ingest_platform.drain.maintenance import maintenance_lock
from ingest_platform.drain.micro_batch import InvalidRowsError, LandedFile, _chunks, _frame
from ingest_platform.storage.event_log import DrainLog, StreamRange, entry_order
from ingest_platform.storage.lake import (
    current_hour_files,
    entry_range_of,
    hour_of_ms,
    partition_dir,
    publish_parquet_atomic,
)

MAX_SEQ = 18446744073709551615
HOUR_MS = dedup.HOUR_MS


@dataclass
class ReplayReport:
    stream: str
    start: str
    end: str
    entries: int = 0
    landed_valid: int = 0
    landed_dead: int = 0
    already_landed: int = 0
    duplicates: int = 0
    files: list[LandedFile] = field(default_factory=list)


def parse_bound(text: str, *, upper: bool) -> str:
    """A stream id from "<ms>-<seq>", "<ms>", or an ISO 8601 time (UTC if no offset)."""
    text = text.strip()
    if "-" in text and text.split("-", 1)[0].isdigit() and text.split("-", 1)[1].isdigit():
        return text
    if text.isdigit():
        return f"{text}-{MAX_SEQ if upper else 0}"
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    ms = int(moment.timestamp() * 1000)
    return f"{ms}-{MAX_SEQ if upper else 0}"


def _before(entry_id: str) -> str:
    """The id just below `entry_id` (StreamRange starts are exclusive)."""
    ms, seq = entry_order(entry_id)
    if seq:
        return f"{ms}-{seq - 1}"
    return f"{ms - 1}-{MAX_SEQ}" if ms else "0-0"


def replay_range(log: DrainLog, event_type: EventType, lake: Path, start: str, end: str,
                 dead_letters_enabled: bool = True) -> ReplayReport:
    """Re-drain entries [start, end] of `event_type`'s stream (clamped to the committed cursor)."""
    cursor = log.cursor(event_type.stream)
    if entry_order(end) > entry_order(cursor):
        end = cursor
    report = ReplayReport(event_type.stream, start, end)
    if cursor == "0-0" or entry_order(start) > entry_order(end):
        return report
    with maintenance_lock(log.client, wait_seconds=120):
        landed = _LandedState(lake, event_type)
        for chunk in _chunks(log, event_type, StreamRange(event_type.stream, _before(start), end)):
            report.entries += chunk.entries
            _replay_chunk(event_type, chunk, lake, landed, report, dead_letters_enabled)
    return report


def replay_hour(log: DrainLog, event_type: EventType, lake: Path, hour: datetime,
                dead_letters_enabled: bool = True) -> ReplayReport:
    """Replay every retained entry ingested during `hour` (a Dagster backfill of its partition)."""
    first_ms = int(hour.timestamp() * 1000)
    return replay_range(log, event_type, lake, f"{first_ms}-0", f"{first_ms + HOUR_MS - 1}-{MAX_SEQ}",
                        dead_letters_enabled)


class _LandedState:
    """What the lake already holds for one stream, per hour (loaded once per hour touched)."""

    def __init__(self, lake: Path, event_type: EventType):
        self.lake, self.event_type = lake, event_type
        self.hours: dict[int, tuple[set[str], dict[str, str], dict[str, tuple[str, str] | None],
                                    set[str], set[tuple[str, str]]]] = {}

    def hour(self, hour_ms: int):
        if hour_ms not in self.hours:
            self.hours[hour_ms] = self._load(hour_ms)
        return self.hours[hour_ms]

    def _load(self, hour_ms: int):
        valid_positions: set[str] = set()
        first_valid: dict[str, str] = {}
        first_valid_batch: dict[str, tuple[str, str] | None] = {}  # event_id -> its file's range
        dead_positions: set[str] = set()
        letters: set[tuple[str, str]] = set()
        for ms in (hour_ms - HOUR_MS, hour_ms):
            directory = partition_dir(self.lake, self.event_type.dataset, hour_of_ms(ms))
            for path in current_hour_files(directory) if directory.exists() else []:
                table = pq.read_table(path, columns=["event_id", "stream_id"])
                batch = entry_range_of(path)
                for event_id, position in zip(table["event_id"].to_pylist(), table["stream_id"].to_pylist()):
                    if ms == hour_ms:
                        valid_positions.add(position)
                    known = first_valid.get(event_id)
                    if known is None or dedup.position_key(position) < dedup.position_key(known):
                        first_valid[event_id] = position
                        first_valid_batch[event_id] = batch
            directory = partition_dir(self.lake, DEAD_LETTER_DATASET, hour_of_ms(ms))
            for path in current_hour_files(directory) if directory.exists() else []:
                table = pl.from_arrow(pq.read_table(path, columns=["event_id", "event_type", "stream_id",
                                                                    "raw_payload", "failures"]))
                table = table.filter(pl.col("event_type") == self.event_type.name)
                for row in table.iter_rows(named=True):
                    if ms == hour_ms:
                        dead_positions.add(row["stream_id"])
                    letters.add((row["event_id"], dedup.dead_letter_digest(row["raw_payload"], row["failures"])))
        return valid_positions, first_valid, first_valid_batch, dead_positions, letters


def _in_range(position: str, batch: tuple[str, str] | None) -> bool:
    entry = entry_order(position.split("/")[0])
    return batch is not None and entry_order(batch[0]) <= entry <= entry_order(batch[1])


def _replay_chunk(event_type: EventType, chunk, lake: Path, landed: _LandedState, report: ReplayReport,
                  dead_letters_enabled: bool) -> None:
    valid_positions, first_valid, first_valid_batch, dead_positions, letters = landed.hour(chunk.hour_ms)
    valid, rejected, repeats = dedup.validate_distinct(event_type.name, _frame(event_type, chunk), chunk.raw_payloads)
    report.duplicates += len(repeats)  # retries (same content) inside the chunk
    keep_valid = []
    for event_id, position in zip(valid["event_id"].to_list(), valid["stream_id"].to_list()):
        if position in valid_positions:
            report.already_landed += 1
            keep_valid.append(False)
        elif event_id in first_valid:
            report.duplicates += 1
            keep_valid.append(False)
        else:
            first_valid[event_id] = position
            first_valid_batch[event_id] = (chunk.first_id, chunk.last_id)  # lands with this chunk
            valid_positions.add(position)
            keep_valid.append(True)
    keep_dead = []
    for event_id, position, raw, failures in zip(rejected["event_id"].to_list(), rejected["stream_id"].to_list(),
                                                 rejected["raw_payload"].to_list(), rejected["failures"].to_list()):
        letter = (event_id, dedup.dead_letter_digest(raw, failures))
        # A letter for an event_id reused inside the chunk comes after its valid twin by definition:
        # it is a duplicate if the drain had the twin in another batch (module docstring), or if
        # the same letter is already there.
        if dedup.reuses_event_id(failures):
            duplicate = not _in_range(position, first_valid_batch.get(event_id))
        else:
            earlier_valid = first_valid.get(event_id)
            duplicate = bool(earlier_valid) and dedup.position_key(earlier_valid) < dedup.position_key(position)
        if position in dead_positions:
            report.already_landed += 1
            keep_dead.append(False)
        elif duplicate or letter in letters:
            report.duplicates += 1
            keep_dead.append(False)
        else:
            letters.add(letter)
            dead_positions.add(position)
            keep_dead.append(True)
    new_valid = valid.filter(pl.Series(keep_valid, dtype=pl.Boolean)).drop(dedup.ROW)
    new_dead = rejected.filter(pl.Series(keep_dead, dtype=pl.Boolean)).drop(dedup.ROW)
    if new_dead.height and not dead_letters_enabled:
        raise InvalidRowsError(f"{new_dead.height} replayed events of {event_type.stream} failed validation "
                               "and ENABLE_DLQ_HANDLING is off")
    hour = hour_of_ms(chunk.hour_ms)
    if new_valid.height:
        table = new_valid.select(event_type.arrow_schema.names).to_arrow().cast(event_type.arrow_schema)
        name = _replay_name(new_valid["stream_id"].to_list())
        path = partition_dir(lake, event_type.dataset, hour) / name
        report.files.append(LandedFile(event_type.dataset, hour, path, table.num_rows,
                                       publish_parquet_atomic(table, path, lake), *_span(new_valid)))
        report.landed_valid += table.num_rows
    if new_dead.height:
        first, last = _span(new_dead)
        table = dead_letter_table(new_dead, event_type.name, f"replay:{event_type.stream}:{first}_{last}")
        path = partition_dir(lake, DEAD_LETTER_DATASET, hour) / f"{event_type.name}_{_replay_name(new_dead['stream_id'].to_list())}"
        report.files.append(LandedFile(DEAD_LETTER_DATASET, hour, path, table.num_rows,
                                       publish_parquet_atomic(table, path, lake), first, last))
        report.landed_dead += table.num_rows


def _span(frame: pl.DataFrame) -> tuple[str, str]:
    positions = frame["stream_id"].to_list()
    return positions[0].split("/")[0], positions[-1].split("/")[0]


def _replay_name(positions: list[str]) -> str:
    digest = hashlib.blake2b("\n".join(positions).encode(), digest_size=6).hexdigest()
    return f"replay_{positions[0].split('/')[0]}_{positions[-1].split('/')[0]}_{digest}.parquet"
