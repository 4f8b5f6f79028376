"""Draining one stream: a fixed id range -> decode -> validate -> dedup -> Parquet (valid rows + dead
letters).

`drain_stream` plans a range (or resumes the unfinished plan), writes every file of it, then
commits the cursor. Everything written is a pure function of the entries in the range (duplicates by
event_id are decided by `dedup`, whose answers are themselves a function of the stream), so a retry
after a crash, or a second drain racing the first, rewrites the same files with the same rows.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from queue import Empty, Full, Queue

import duckdb
import msgspec
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from ingest_platform.contract import (
    DEAD_LETTER_DATASET,
    EVENT_TYPES,
    NO_RAW,
    STREAM_ENTRY_FIELD,
    STREAM_RAW_FIELD,
    EventType,
    stream_entry_decoder,
    stream_raws_decoder,
)
from ingest_platform.dlq.dead_letters import dead_letter_table
from ingest_platform.drain import dedup
from ingest_platform.storage.event_log import DrainLog, StreamRange, entry_ms
from ingest_platform.storage.lake import hour_of_ms, partition_dir, publish_parquet_atomic

# A file is cut when the hour changes or when it holds this many events: memory stays O(this).
FILE_TARGET_EVENTS = 250_000
ISO_UTC = "%Y-%m-%dT%H:%M:%S%.fZ"


class InvalidRowsError(RuntimeError):
    """Raised when rows fail validation and dead-letter handling is switched off.

    `reports` are the ranges the other streams drained and committed before it was raised: their
    rows are in the lake and their cursors moved, so the caller must still publish them (warehouse
    views, materialisations) before failing, or they stay invisible with nothing left to retry."""

    def __init__(self, message: str, reports: list[DrainReport] | None = None):
        super().__init__(message)
        self.reports = reports or []


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
    duplicates: int = 0  # occurrences dropped by event_id (client retries, repeated replays)
    superseded: bool = False  # another drain committed this range first; it wrote the files
    files: list[LandedFile] = field(default_factory=list)
    oldest_entry_ms: int | None = None

    @property
    def lag_seconds(self) -> float:
        """Age of the oldest entry drained, at the time of the report."""
        return 0.0 if self.oldest_entry_ms is None else max(0.0, time.time() - self.oldest_entry_ms / 1000)


class _RawEntry(msgspec.Struct):
    events: list[msgspec.Raw]


class _RawEvent(msgspec.Struct):
    raw: msgspec.Raw = NO_RAW


# Entries written before the raws moved to their own field carry each raw inside its event: the
# events as unparsed slices (a scan, nothing built), then each one's `raw`, kept byte for byte.
_raw_entry_decoder = msgspec.json.Decoder(_RawEntry)
_raw_event_decoder = msgspec.json.Decoder(_RawEvent)

# XRANGE page size: ~30 MB of replies at 100 events per entry, small enough for the reader thread to
# stay a page or two ahead of the processing without holding the range in memory.
READ_PAGE_ENTRIES = 1_000
DECODE_THREADS = 2  # the machine's cores; more only contend with validation and the writer
_DECODE_SQL = (Path(__file__).parent / "sql" / "decode_entries.sql").read_text()


@dataclass
class _Chunk:
    """Entries of one hour, decoded into one Arrow table (columns: event_id, the payload fields,
    received_at, api_key_id, stream_id). The raw payloads are not decoded (only dead letters need
    them): `entry_fields` keeps each entry's stream fields for `raw_payloads`."""

    hour_ms: int
    first_id: str = ""
    last_id: str = ""
    entries: int = 0
    events: int = 0
    pieces: list[pa.Table] = field(default_factory=list)
    entry_fields: dict[str, dict[bytes, bytes]] = field(default_factory=dict)

    @property
    def table(self) -> pa.Table:
        return pa.concat_tables(self.pieces).drop_columns(["entry_pos"])

    def raw_payloads(self, stream_ids: list[str]) -> list[str]:
        """The events' JSON exactly as the client sent it, for positions "<entry id>/<index>"."""
        decoded: dict[str, list[msgspec.Raw]] = {}
        raws = []
        for position in stream_ids:
            entry_id, _, index = position.partition("/")
            if entry_id not in decoded:
                decoded[entry_id] = _entry_raws(self.entry_fields[entry_id])
            entry_raws, at = decoded[entry_id], int(index)
            if at >= len(entry_raws):
                raise ValueError(f"stream entry {entry_id} holds fewer raw payloads than events: it was not "
                                 "written by the gateway (contract.encode_stream_entry)")
            raws.append(bytes(entry_raws[at]).decode())
        return raws


def _entry_raws(fields: dict[bytes, bytes]) -> list[msgspec.Raw]:
    """The raw JSON of each event of a stream entry, in order."""
    if STREAM_RAW_FIELD in fields:
        return stream_raws_decoder.decode(fields[STREAM_RAW_FIELD])
    return [_raw_event_decoder.decode(event).raw for event in _raw_entry_decoder.decode(fields[STREAM_ENTRY_FIELD]).events]


def rejected_by(stream: str, first_id: str, last_id: str) -> str:
    """The `rejected_by` of the drain's dead letters: the stream and entry range, no run or tick id,
    because a retry of the range must rewrite the same file byte for byte."""
    return f"{stream}:{first_id}_{last_id}"


def drain_all_streams(log: DrainLog, lake: Path, max_entries: int,
                      dead_letters_enabled: bool = True) -> list[DrainReport]:
    """Drain every event stream once. Streams of switched-off event types are drained too, so
    entries accepted before a flag changed are never stranded."""
    reports, failures = [], []
    for event_type in EVENT_TYPES.values():
        try:
            report = drain_stream(log, event_type, lake, max_entries, dead_letters_enabled)
        except InvalidRowsError as exc:  # drain the other streams, then fail loudly
            failures.append(exc)
            continue
        if report is not None:
            reports.append(report)
    if failures:
        raise InvalidRowsError("; ".join(str(f) for f in failures), reports)
    return reports


def drain_stream(log: DrainLog, event_type: EventType, lake: Path, max_entries: int,
                 dead_letters_enabled: bool = True) -> DrainReport | None:
    """Drain the next range of `event_type`'s stream; None when there is nothing new."""
    rng = log.plan_next_range(event_type.stream, max_entries)
    if rng is None:
        return None
    report = drain_stream_range(log, event_type, rng, lake, dead_letters_enabled)
    if not report.superseded:
        report.superseded = not log.commit(rng, report.entries)
    return report


def drain_stream_range(log: DrainLog, event_type: EventType, rng: StreamRange, lake: Path,
                       dead_letters_enabled: bool = True) -> DrainReport:
    """Write every file for the entries in `rng`; does not move the cursor.

    Before each file, checks that the range is still uncommitted: a drain that stalled while
    another one committed its range stops instead of rewriting files that compaction may already
    have retired (the rewrite would be identical, but it would bring a retired file back)."""
    report = DrainReport(range=rng)
    # Three stages overlap: the next chunk is validated (polars, GIL mostly released) while this
    # one is claimed, and a writer thread writes a chunk's files meanwhile (pyarrow, GIL released).
    # Every write has finished (or failed) before this returns, hence before the cursor can move.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="drain-writer") as writer, \
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="drain-validator") as validator:
        writes: list[tuple[LandedFile, Future]] = []
        for chunk, validated in _validated_ahead(event_type, _chunks(log, event_type, rng), validator):
            if log.cursor(rng.stream) != rng.start:
                report.superseded = True
                break
            report.entries += chunk.entries
            if report.oldest_entry_ms is None:
                report.oldest_entry_ms = entry_ms(chunk.first_id)
            writes += _land_chunk(log, event_type, rng, chunk, validated, lake, report, dead_letters_enabled, writer)
        for landed, write in writes:
            landed.bytes = write.result()
    return report


def _validated_ahead(event_type: EventType, chunks, validator: Executor):
    """(chunk, its validation) in order, validating one chunk ahead of the consumer: validation
    needs no Redis and no earlier chunk, only the claims (`dedup.drop_duplicates`) go in order."""
    pending: tuple[_Chunk, Future] | None = None
    for chunk in chunks:
        ahead = (chunk, validator.submit(_validate, event_type, chunk))
        if pending is not None:
            yield pending[0], pending[1].result()
        pending = ahead
    if pending is not None:
        yield pending[0], pending[1].result()


def _validate(event_type: EventType, chunk: _Chunk) -> dedup.Validated:
    return dedup.validate(event_type.name, _frame(event_type, chunk), chunk.raw_payloads)


def _chunks(log: DrainLog, event_type: EventType, rng: StreamRange):
    """The range's entries as chunks of one ingestion hour and at most about FILE_TARGET_EVENTS
    events (cut between entries, after the entry that reaches the target)."""
    chunk: _Chunk | None = None
    for entry_ids, page_fields, table in _decoded_pages(log, event_type, rng):
        counts = _events_per_entry(table, len(entry_ids))
        row = piece_row = 0
        for pos, entry_id in enumerate(entry_ids):
            hour_ms = entry_ms(entry_id) // 3_600_000 * 3_600_000
            if chunk is None or hour_ms != chunk.hour_ms or chunk.events >= FILE_TARGET_EVENTS:
                if chunk is not None:
                    chunk.pieces.append(table.slice(piece_row, row - piece_row))
                    yield chunk
                chunk, piece_row = _Chunk(hour_ms, first_id=entry_id), row
            chunk.entry_fields[entry_id] = page_fields[pos]
            chunk.entries += 1
            chunk.events += counts[pos]
            chunk.last_id = entry_id
            row += counts[pos]
        chunk.pieces.append(table.slice(piece_row, row - piece_row))  # (every page has an entry)
    if chunk is not None:
        yield chunk


def _events_per_entry(table: pa.Table, entries: int) -> list[int]:
    counts = [0] * entries  # an entry with no events has no row
    for item in pc.value_counts(table["entry_pos"]).to_pylist():
        counts[item["values"]] = item["counts"]
    return counts


def _decoded_pages(log: DrainLog, event_type: EventType, rng: StreamRange):
    """(entry ids, entry fields, decoded events) per XRANGE page of the range, in order. A reader thread
    fetches the pages (XRANGE mostly waits on the socket) and hands each to a pool of decoders
    (DuckDB decodes without the GIL), so two pages decode at once while the next one is fetched:
    decoding was the slowest stage of the drain, and the processing waited on it."""
    decoders = threading.local()  # a DuckDB connection is not shared between threads

    def decode(page):
        if not hasattr(decoders, "decoder"):
            decoders.decoder = _PageDecoder(event_type)
        entry_ids = [entry_id for entry_id, _ in page]
        page_fields = [fields for _, fields in page]
        payloads = [fields[STREAM_ENTRY_FIELD] for fields in page_fields]
        return entry_ids, page_fields, decoders.decoder.decode(entry_ids, payloads)

    with ThreadPoolExecutor(max_workers=DECODE_THREADS, thread_name_prefix="drain-decoder") as pool:
        pages = (pool.submit(decode, page) for page in log.read_range_pages(rng, READ_PAGE_ENTRIES))
        for decoded in _prefetch(pages, depth=DECODE_THREADS + 1):
            yield decoded.result()


class _PageDecoder:
    """Stream entries -> one Arrow table of their events, in DuckDB's JSON reader: measured at about
    twice the speed of msgspec structs plus building the columns in Python (1.3M vs 0.6M events/s
    for 250k events), and no Python object per event. Entries DuckDB cannot read (not JSON, a
    field of another type) go through msgspec instead, so a bad entry never hides the others."""

    def __init__(self, event_type: EventType):
        self.event_type = event_type
        self.schema = _decoded_schema(event_type)
        self.sql = _decode_sql(event_type, self.schema)
        self.con = duckdb.connect()
        self.con.execute("SET threads = 1")  # parallel across pages instead (`_decoded_pages`)
        # Strings as Arrow string views, which polars takes without converting (3x cheaper _frame).
        self.con.execute("SET produce_arrow_string_view = true")

    def decode(self, entry_ids: list[str], payloads: list[bytes]) -> pa.Table:
        entries = pa.table({"entry_pos": pa.array(range(len(entry_ids)), pa.int64()),
                            "entry_id": pa.array(entry_ids, pa.string()),
                            "payload": pa.array(payloads, pa.binary())})
        try:
            entries = entries.set_column(2, "payload", entries["payload"].cast(pa.string()))
            self.con.register("entries", entries)
            return self.con.sql(self.sql).to_arrow_table().cast(self.schema)
        except (duckdb.Error, pa.ArrowException):
            return _decode_with_msgspec(self.event_type, self.schema, entry_ids, payloads)
        finally:
            self.con.unregister("entries")


def _decoded_schema(event_type: EventType) -> pa.Schema:
    text = pa.string_view()
    payload = [(f.name, pa.float64() if f.type == pa.float64() else text)
               for f in event_type.arrow_schema if f.name in event_type.payload_fields]
    return pa.schema([("event_id", text), *payload,
                      ("received_at", text), ("api_key_id", text), ("stream_id", text), ("entry_pos", pa.int64())])


def _decode_sql(event_type: EventType, schema: pa.Schema) -> str:
    fields = ", ".join(f'"{n}": "{"DOUBLE" if schema.field(n).type == pa.float64() else "VARCHAR"}"'
                       for n in event_type.payload_fields)
    entry_type = ('{"received_at": "VARCHAR", "api_key_id": "VARCHAR", '
                  f'"events": [{{"event_id": "VARCHAR", "fields": {{{fields}}}}}]}}')
    columns = ", ".join(f'event.fields."{n}" AS "{n}"' for n in event_type.payload_fields)
    return _DECODE_SQL.format(entry_type=entry_type, field_columns=columns)


def _decode_with_msgspec(event_type: EventType, schema: pa.Schema, entry_ids: list[str],
                         payloads: list[bytes]) -> pa.Table:
    """The fallback decoder: the contract's own msgspec structs, one entry at a time."""
    columns: dict[str, list] = {name: [] for name in schema.names}
    for pos, (entry_id, payload) in enumerate(zip(entry_ids, payloads)):
        entry = stream_entry_decoder.decode(payload)
        count = len(entry.events)
        columns["event_id"].extend([event.event_id for event in entry.events])
        for name in event_type.payload_fields:
            columns[name].extend([event.fields.get(name) for event in entry.events])
        columns["received_at"].extend([entry.received_at] * count)
        columns["api_key_id"].extend([entry.api_key_id] * count)
        columns["stream_id"].extend([f"{entry_id}/{index}" for index in range(count)])
        columns["entry_pos"].extend([pos] * count)
    return pa.table(columns, schema=schema)


def _prefetch(pages, depth: int = 2):
    """Iterate `pages` in a reader thread, `depth` items ahead, so reading overlaps with validating
    and writing the previous chunk. Exceptions are raised here; stopping early stops the reader."""
    queue: Queue = Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def read():
        try:
            for page in pages:
                while not stop.is_set():
                    try:
                        queue.put(page, timeout=0.1)
                        break
                    except Full:
                        continue
                if stop.is_set():
                    return
            queue.put(done)
        except BaseException as exc:  # handed to the consumer, which raises it
            queue.put(exc)

    reader = threading.Thread(target=read, name="drain-reader", daemon=True)
    reader.start()
    try:
        while (item := queue.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while reader.is_alive():  # unblock a reader waiting on a full queue
            try:
                queue.get(timeout=0.1)
            except Empty:
                pass
        reader.join()


def _frame(event_type: EventType, chunk: _Chunk) -> pl.DataFrame:
    parse = [pl.col(n).str.to_datetime(ISO_UTC, time_unit="us", time_zone="UTC", strict=False)
             for n in (*event_type.timestamp_fields, "received_at")]
    return pl.from_arrow(chunk.table, rechunk=False).with_columns(*parse, pl.lit(None, dtype=pl.String).alias("raw_payload"))


def _land_chunk(log: DrainLog, event_type: EventType, rng: StreamRange, chunk: _Chunk, validated: dedup.Validated,
                lake: Path, report: DrainReport, dead_letters_enabled: bool,
                writer: Executor) -> list[tuple[LandedFile, Future]]:
    """Deduplicate one validated chunk, then hand its files to `writer` (each LandedFile gets its
    size once written)."""
    split = dedup.drop_duplicates(log.client, rng.stream, chunk.hour_ms, f"{chunk.first_id}_{chunk.last_id}", validated)
    report.duplicates += split.duplicates
    if split.rejected.height and not dead_letters_enabled:
        raise InvalidRowsError(
            f"{split.rejected.height} of {chunk.entries} entries' events in {event_type.stream} "
            f"({chunk.first_id}..{chunk.last_id}) failed validation and ENABLE_DLQ_HANDLING is off; "
            "they stay in Redis until dead-letter handling is switched on or the data is fixed"
        )
    hour = hour_of_ms(chunk.hour_ms)
    name = f"{chunk.first_id}_{chunk.last_id}.parquet"
    writes = []

    def publish(dataset: str, path: Path, table: pa.Table) -> None:
        landed = LandedFile(dataset, hour, path, table.num_rows, 0, chunk.first_id, chunk.last_id)
        writes.append((landed, writer.submit(publish_parquet_atomic, table, path, lake)))
        report.files.append(landed)

    if split.valid.height:
        table = split.valid.select(event_type.arrow_schema.names).to_arrow().cast(event_type.arrow_schema)
        publish(event_type.dataset, partition_dir(lake, event_type.dataset, hour) / name, table)
        report.valid += table.num_rows
    if split.rejected.height:
        table = dead_letter_table(split.rejected, event_type.name,
                                  rejected_by(event_type.stream, chunk.first_id, chunk.last_id))
        publish(DEAD_LETTER_DATASET, partition_dir(lake, DEAD_LETTER_DATASET, hour) / f"{event_type.name}_{name}", table)
        report.dead += table.num_rows
    return writes

