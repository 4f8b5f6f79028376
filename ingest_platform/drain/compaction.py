"""Compaction: once an ingestion hour is closed, rewrite its many small files into few large ones.

The swap, for one hour directory (readers never see a row twice or miss one):

1. write the compacted outputs under hidden names (not `*.parquet`), fsync, and link their pinned
   twins (lake/.pinned/...);
2. under the exclusive lake lock: write the journal `.compaction.json` (inputs, outputs), rename
   the outputs into place, unlink the inputs' hive names, delete the journal.

Warehouse refreshes list files under the shared lake lock, so they see the hour before or after
the swap, and a view lists pinned paths: queries (and connections) that planned to read an input
still find it under its pinned name until `collect_retired_pins` removes it, a grace period
later. If the process dies inside step 2, the journal survives and says which side is the hour
(the outputs once all are in place, else the inputs); the next compaction finishes the swap.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ingest_platform.contract import DEAD_LETTER_DATASET, EVENT_TYPES
from ingest_platform.storage.event_log import DrainLog
from ingest_platform.storage.lake import (
    COMPACTED_PREFIX,
    COMPACTION_JOURNAL,
    PARQUET_COMPRESSION,
    LakeLock,
    _fsync_dir,
    _link_replace,
    entry_range_of,
    hour_dirs,
    hour_files,
    hour_of_dir,
    pinned_path,
)

HOUR = timedelta(hours=1)


@dataclass
class Compacted:
    dataset: str
    hour: datetime
    inputs: int
    outputs: list[Path]
    rows: int
    bytes: int


def streams_feeding(dataset: str) -> list[str]:
    if dataset == DEAD_LETTER_DATASET:
        return [t.stream for t in EVENT_TYPES.values()]
    return [t.stream for t in EVENT_TYPES.values() if t.dataset == dataset]


def compactable_datasets() -> list[str]:
    return [*(t.dataset for t in EVENT_TYPES.values()), DEAD_LETTER_DATASET]


def hour_is_drained(log: DrainLog, streams: list[str], hour: datetime) -> bool:
    """No entry of `hour` (or before) is still waiting beyond any stream's committed cursor."""
    last_ms = int((hour + HOUR).timestamp() * 1000) - 1
    for stream in streams:
        cursor = log.cursor(stream)
        if log.client.xrange(stream, min=f"({cursor}", max=f"{last_ms}-18446744073709551615", count=1):
            return False
    return True


def needs_compaction(directory: Path) -> bool:
    """An interrupted swap to finish, or several files of which some are not compacted yet (new
    hours, or a closed hour that a replay added to)."""
    if (directory / COMPACTION_JOURNAL).exists():
        return True
    files = hour_files(directory)
    return len(files) > 1 and any(not f.name.startswith(COMPACTED_PREFIX) for f in files)


def compact_closed_hours(log: DrainLog, lake: Path, grace: timedelta, target_rows: int,
                         now: datetime | None = None, limit: int | None = None) -> list[Compacted]:
    """Compact every hour that closed more than `grace` ago and is fully drained (at most `limit`)."""
    now = now or datetime.now().astimezone()
    done: list[Compacted] = []
    for dataset in compactable_datasets():
        streams = streams_feeding(dataset)
        for directory in hour_dirs(lake, dataset):
            hour = hour_of_dir(directory)
            if hour + HOUR + grace > now or not needs_compaction(directory):
                continue
            if not hour_is_drained(log, streams, hour):
                continue
            result = compact_hour(lake, dataset, directory, target_rows)
            if result is not None:
                done.append(result)
            if limit is not None and len(done) >= limit:
                return done
    return done


def compact_hour(lake: Path, dataset: str, directory: Path, target_rows: int) -> Compacted | None:
    """Rewrite one hour's files into files of at most `target_rows` rows, swapped in atomically.
    Streams row groups from one input at a time: memory is O(a row group), not O(the hour)."""
    if (directory / COMPACTION_JOURNAL).exists():
        _finish_swap(directory)
    inputs = sorted(hour_files(directory), key=_stream_order)
    if len(inputs) <= 1:
        return None
    generation = _next_generation(inputs)
    outputs: list[Path] = []
    rows = size = 0
    writer = None
    written = 0
    schema = _common_schema(inputs)
    for batch in _batches(inputs, schema):
        while batch.num_rows:
            if writer is None or written >= target_rows:
                if writer is not None:
                    size += _close_output(writer, directory, outputs[-1], lake)
                final = directory / f"{COMPACTED_PREFIX}g{generation:04d}_{len(outputs):03d}.parquet"
                outputs.append(final)
                writer = _open_output(directory, final, schema)
                written = 0
            take = batch.slice(0, target_rows - written)
            writer[1].write_batch(take)
            written += take.num_rows
            rows += take.num_rows
            batch = batch.slice(take.num_rows)
    if writer is not None:
        size += _close_output(writer, directory, outputs[-1], lake)
    with LakeLock(lake, exclusive=True):
        _write_journal(directory, {"inputs": [p.name for p in inputs], "outputs": [p.name for p in outputs]})
        _finish_swap(directory)
    return Compacted(dataset, hour_of_dir(directory), len(inputs), outputs, rows, size)


def _stream_order(path: Path) -> tuple:
    """Files in stream order: by event type (dead letters), then by their first entry id."""
    name = path.name.removesuffix(".parquet")
    entries = entry_range_of(path)
    if entries is None:  # a compacted file
        return ("", 0, 0, name)
    parts = name.split("_")
    event_type = "_".join(p for p in parts[: parts.index(entries[0])] if p != "replay")
    ms, _, seq = entries[0].partition("-")
    return (event_type, int(ms), int(seq), name)


def _common_schema(inputs: list[Path]) -> pa.Schema:
    return pa.unify_schemas([pq.read_schema(p) for p in inputs], promote_options="default")


def _batches(inputs: list[Path], schema: pa.Schema):
    for path in inputs:
        parquet = pq.ParquetFile(path)
        for group in range(parquet.num_row_groups):
            table = parquet.read_row_group(group)
            yield from pa.Table.from_batches(table.to_batches()).cast(schema).to_batches()


def _open_output(directory: Path, final: Path, schema: pa.Schema):
    hidden = directory / f".{final.name}.pending"
    fh = open(hidden, "wb")
    return fh, pq.ParquetWriter(fh, schema, compression=PARQUET_COMPRESSION)


def _close_output(writer, directory: Path, final: Path, lake: Path) -> int:
    fh, parquet_writer = writer
    parquet_writer.close()
    fh.flush()
    os.fsync(fh.fileno())
    fh.close()
    hidden = directory / f".{final.name}.pending"
    _link_replace(hidden, pinned_path(lake, final))
    return hidden.stat().st_size


def _finish_swap(directory: Path) -> None:
    """Complete the swap the journal describes (idempotent: safe after a crash at any point)."""
    journal = directory / COMPACTION_JOURNAL
    plan = json.loads(journal.read_text())
    outputs = [directory / n for n in plan["outputs"]]
    missing = [o for o in outputs if not o.exists() and not (directory / f".{o.name}.pending").exists()]
    if missing:  # cannot happen (outputs are durable before the journal); keep the inputs
        journal.unlink()
        _fsync_dir(directory)
        return
    for output in outputs:
        hidden = directory / f".{output.name}.pending"
        if hidden.exists():
            os.replace(hidden, output)
    _fsync_dir(directory)
    for name in plan["inputs"]:
        (directory / name).unlink(missing_ok=True)
    _fsync_dir(directory)
    journal.unlink()
    _fsync_dir(directory)


def _write_journal(directory: Path, plan: dict) -> None:
    tmp = directory / f".{COMPACTION_JOURNAL}.tmp"
    with open(tmp, "w") as fh:
        json.dump(plan, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, directory / COMPACTION_JOURNAL)
    _fsync_dir(directory)


def _next_generation(files: list[Path]) -> int:
    generations = [int(f.name[len(COMPACTED_PREFIX) + 1:].split("_", 1)[0]) for f in files
                   if f.name.startswith(COMPACTED_PREFIX + "g")]
    return max(generations, default=0) + 1


def retire_pins(lake: Path, grace: timedelta) -> int:
    from ingest_platform.storage.lake import collect_retired_pins

    return collect_retired_pins(lake, grace.total_seconds(), time.time())
