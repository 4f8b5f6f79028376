"""Replaying dead letters: select, optionally fix, re-inject with the original event_id, record.

A replay appends each selected letter to its event type's stream as a new entry, exactly as the
gateway would have (same parsing and sanitising, `gateway.events.to_stream_event`), keeping the
original event_id, received_at and api_key_id. The drain then validates it like any other entry:
it lands as a valid row or as a new dead letter with its new reasons.

Idempotence: a letter whose event_id is already a valid row is not re-injected (reported as
already valid); the drain's exactly-once by event_id covers two replays racing before a drain.

Outcomes are known only after the drain has processed the new entries, so `replay_dead_letters`
returns what it injected, `wait_for_drain` waits until the drain cursor has passed those entries,
and `replay_outcomes` reads the statuses from the `dead_letter_events` view. A replayed entry that
fails again with the same payload and reasons lands nowhere (the drain keeps one letter per event,
payload and reasons), so the view alone would show it `replayed` for ever: each replay is noted in
Redis until the drain has passed its entries, and the drain settles it then
(`settle_drained_replays`, called after every drain), without anyone running a report.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import msgspec
import polars as pl
import pyarrow as pa
import redis
import uuid_utils

from ingest_platform.contract import EVENT_TYPES, StreamEntry, encode_stream_entry
from ingest_platform.dlq import inspection
from ingest_platform.dlq.fixes import get_fix
from ingest_platform.dlq.lineage import (
    DEAD_LETTER_REPLAY_SCHEMA,
    DEAD_LETTER_REPLAYS_DATASET,
    FAILED_AGAIN,
    PENDING,
    REPLAY_STATUSES,
)
from ingest_platform.drain.micro_batch import ISO_UTC
from ingest_platform.gateway.events import to_stream_event
from ingest_platform.storage.event_log import DrainLog, append_entries_sync, entry_order
from ingest_platform.storage.lake import partition_dir, publish_parquet_atomic
from ingest_platform.storage.warehouse import refresh_warehouse
from ingest_platform.validation.split import split_valid_rows

DEFAULT_STATUSES = (PENDING, FAILED_AGAIN)
# Replays whose entries the drain has not passed yet: replay_id -> JSON {stream: last entry id}.
# A few fields at most (one per replay until the next drain), read by every drain.
AWAITING_DRAIN_KEY = "ingest:dlq:replays-awaiting-drain"
CHUNK = 1_000  # letters per XADD pipeline and per replay-record file
_wrapper_decoder = msgspec.json.Decoder(dict[str, msgspec.Raw])
_ISO = "%Y-%m-%dT%H:%M:%S.%fZ"

# Valid rows among some event ids (the already-valid check before re-injecting).
VALID_IDS_SQL = "SELECT DISTINCT event_id FROM {dataset} WHERE list_contains(?, event_id)"


@dataclass
class ReplayResult:
    replay_id: str
    selected: int = 0
    injected: int = 0
    already_valid: int = 0
    not_replayable: list[tuple[str, str]] = field(default_factory=list)  # (event_id, why)
    predicted_valid: int = 0  # letters that pass validation now, as prepared (after the fix)
    predicted_failures: Counter = field(default_factory=Counter)  # check -> failures predicted
    held_back: int = 0  # would fail again, so not re-injected (only_valid)
    last_entry_ids: dict[str, str] = field(default_factory=dict)  # stream -> last appended id


@dataclass
class ReplayOutcomes:
    """Where the letters of one replay stand now (replay_status -> letters)."""

    replay_id: str
    counts: dict[str, int]

    @property
    def succeeded(self) -> int:
        return self.counts.get("succeeded", 0)

    @property
    def failed_again(self) -> int:
        return self.counts.get("failed_again", 0)

    @property
    def already_valid(self) -> int:
        return self.counts.get("already_valid", 0)

    @property
    def awaiting_drain(self) -> int:
        return self.counts.get("replayed", 0)


def new_replay_id() -> str:
    return f"replay-{uuid_utils.uuid7()}"


def replay_dead_letters(
    client: redis.Redis, lake: Path, warehouse: Path, letters: inspection.LetterFilter,
    fix: str | None = None, limit: int | None = None, replay_id: str | None = None,
    dry_run: bool = False, only_valid: bool = False,
    on_selected: Callable[[int], None] | None = None, on_progress: Callable[[int], None] | None = None,
) -> ReplayResult:
    """Re-inject the dead letters matching `letters`.

    Without statuses or event ids in the filter, selects what still needs replaying: the newest
    letter of each event, pending or failed again. Each letter is first validated as the drain
    will validate it (`predicted_failures`); `dry_run` stops there, and `only_valid` re-injects only
    the letters that pass (what ENABLE_DLQ_HANDLING=false needs: a letter that would fail again
    would block its stream)."""
    named_fix = get_fix(fix) if fix else None
    if not letters.statuses and not letters.event_ids:
        letters.statuses = DEFAULT_STATUSES
        letters.latest_letters_only = True
    result = ReplayResult(replay_id or new_replay_id())
    selected = inspection.letters_for_replay(warehouse, lake, letters, limit)
    result.selected = len(selected)
    if on_selected:
        on_selected(len(selected))
    valid_ids = already_valid_ids(warehouse, lake, {row["event_id"] for row in selected})
    for number, start in enumerate(range(0, len(selected), CHUNK)):
        chunk = selected[start:start + CHUNK]
        records = _replay_chunk(client, chunk, valid_ids, named_fix, result, dry_run, only_valid)
        if not dry_run:
            _write_records(lake, result.replay_id, number, records)
            if result.last_entry_ids:  # after the records: settling reads them
                client.hset(AWAITING_DRAIN_KEY, result.replay_id, json.dumps(result.last_entry_ids))
        if on_progress:
            on_progress(len(chunk))
    if selected and not dry_run:
        refresh_warehouse(warehouse, lake)  # analysts see the new statuses at once
    return result


def _replay_chunk(client, chunk: list[dict], valid_ids: set[str], named_fix, result: ReplayResult,
                  dry_run: bool, only_valid: bool) -> list[dict]:
    now = datetime.now(timezone.utc)
    records, prepared = [], []
    for letter in chunk:
        record = {"replay_id": result.replay_id, "replayed_at": now, "event_id": letter["event_id"],
                  "event_type": letter["event_type"], "letter_stream_id": letter["stream_id"],
                  "fix": named_fix.name if named_fix else None, "replayed_stream_id": None, "outcome": None}
        if letter["event_id"] in valid_ids:
            result.already_valid += 1
            records.append(record)
            continue
        try:
            prepared.append((record, _stream_entry(letter, named_fix)))
        except ValueError as exc:
            result.not_replayable.append((letter["event_id"], str(exc)))
    failing = _predict(prepared, result)
    if dry_run:
        return records
    if only_valid:
        result.held_back += len(failing)
        prepared = [item for index, item in enumerate(prepared) if index not in failing]
    if prepared:
        appends = [(EVENT_TYPES[entry.event_type].stream, encode_stream_entry(entry)) for _, entry in prepared]
        entry_ids = append_entries_sync(client, appends)
        for (record, _), (stream, _), entry_id in zip(prepared, appends, entry_ids):
            record["replayed_stream_id"] = f"{entry_id}/0"
            result.last_entry_ids[stream] = entry_id
            records.append(record)
        result.injected += len(entry_ids)
    return records


def _predict(prepared: list[tuple[dict, StreamEntry]], result: ReplayResult) -> set[int]:
    """Validate the prepared entries as the drain will; returns the indices that would fail."""
    failing: set[int] = set()
    by_type: dict[str, list[int]] = {}
    for index, (_, entry) in enumerate(prepared):
        by_type.setdefault(entry.event_type, []).append(index)
    for event_type, indices in by_type.items():
        split = split_valid_rows(event_type, events_frame(EVENT_TYPES[event_type], [prepared[i][1] for i in indices]))
        rows = split.rejected["stream_id"].to_list()
        failing.update(indices[int(row.rsplit("/", 1)[1])] for row in rows)
        for check, n in split.failures.group_by("check").len().iter_rows():
            result.predicted_failures[check] += n
    result.predicted_valid += len(prepared) - len(failing)
    return failing


def events_frame(event_type, entries: list[StreamEntry]) -> pl.DataFrame:
    """Single-event entries as the drain's frame (same columns and timestamp parsing); stream_id
    is a placeholder "<prediction>/<position>" since the entries have no id yet."""
    names = ("event_id", *event_type.payload_fields, "received_at", "api_key_id", "stream_id", "raw_payload")
    columns: dict[str, list] = {n: [] for n in names}
    for position, entry in enumerate(entries):
        (event,) = entry.events
        columns["event_id"].append(event.event_id)
        for name in event_type.payload_fields:
            columns[name].append(event.fields.get(name))
        columns["received_at"].append(entry.received_at)
        columns["api_key_id"].append(entry.api_key_id)
        columns["stream_id"].append(f"prediction/{position}")
        columns["raw_payload"].append(bytes(event.raw).decode())
    lake_types = {f.name: f.type for f in event_type.arrow_schema}
    schema = {n: pl.Float64 if lake_types.get(n) == pa.float64() else pl.String for n in names}
    return pl.DataFrame(columns, schema=schema).with_columns(
        pl.col(n).str.to_datetime(ISO_UTC, time_unit="us", time_zone="UTC", strict=False)
        for n in (*event_type.timestamp_fields, "received_at"))


def _stream_entry(letter: dict, named_fix) -> StreamEntry:
    """The letter as the gateway would have enqueued it, with its original event_id."""
    event_type = EVENT_TYPES.get(letter["event_type"])
    if event_type is None:
        raise ValueError(f"unknown event type {letter['event_type']!r}")
    if letter["event_id"] is None or letter["received_at"] is None:
        # The gateway always stamps both; an entry without them would not decode in the drain.
        raise ValueError("letter has no event_id or received_at")
    raw = letter["raw_payload"].encode()
    try:
        wrapper = _wrapper_decoder.decode(raw)
        inner = wrapper[event_type.name]
        if named_fix is not None:
            fixed = _apply(named_fix, event_type.name, msgspec.json.decode(inner))
            raw = msgspec.json.encode({event_type.name: fixed})
            inner = msgspec.Raw(msgspec.json.encode(fixed))
        payload = msgspec.json.decode(inner, type=event_type.payload)
    except (msgspec.DecodeError, KeyError) as exc:
        raise ValueError(f"payload is not a {event_type.name}: {exc}") from None
    event = to_stream_event(event_type, payload, msgspec.Raw(raw))
    event.event_id = letter["event_id"]
    received_at = letter["received_at"].astimezone(timezone.utc).strftime(_ISO)
    return StreamEntry(event_type.name, received_at, letter["api_key_id"] or "", [event])


def _apply(named_fix, event_type: str, payload) -> dict:
    """A fix only ever sees an object; one that breaks on odd input leaves the letter where it is."""
    if not isinstance(payload, dict):
        raise ValueError(f"payload is not a JSON object: {payload!r:.80}")
    try:
        return named_fix.apply(event_type, payload)
    except Exception as exc:  # a fix is user-extensible code: report, do not abort the replay
        raise ValueError(f"fix {named_fix.name} failed: {exc!r}") from None


def _write_records(lake: Path, replay_id: str, number: int, records: list[dict]) -> None:
    if not records:
        return
    table = pl.DataFrame(records, schema_overrides={"replayed_at": pl.Datetime("us", "UTC")}).to_arrow()
    table = table.select(DEAD_LETTER_REPLAY_SCHEMA.names).cast(DEAD_LETTER_REPLAY_SCHEMA)
    hour = records[0]["replayed_at"].replace(minute=0, second=0, microsecond=0)
    path = partition_dir(lake, DEAD_LETTER_REPLAYS_DATASET, hour) / f"{replay_id}_{number:05d}.parquet"
    publish_parquet_atomic(table, path, lake)


def already_valid_ids(warehouse: Path, lake: Path, event_ids: set[str]) -> set[str]:
    """The subset of `event_ids` that are valid rows in the lake."""
    con = inspection.open_dead_letters(warehouse, lake) if event_ids else None
    if con is None:
        return set()
    found: set[str] = set()
    with con:
        for event_type in EVENT_TYPES.values():
            rows = con.execute(VALID_IDS_SQL.format(dataset=event_type.dataset), [sorted(event_ids)]).fetchall()
            found.update(row[0] for row in rows)
    return found


def wait_for_drain(log: DrainLog, last_entry_ids: dict[str, str], timeout: float, poll: float = 0.5) -> bool:
    """True once the drain has committed past every stream's last replayed entry."""
    deadline = time.monotonic() + timeout
    while True:
        if all(entry_order(log.cursor(stream)) >= entry_order(last) for stream, last in last_entry_ids.items()):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll)


# Letters of one replay still "replayed" (their new entry has landed nowhere yet).
AWAITING_SQL = """
SELECT event_id, event_type, stream_id, replayed_stream_id, replay_fix FROM dead_letter_events
WHERE replay_id = ? AND replay_status = 'replayed'
"""


def settle_replay(warehouse: Path, lake: Path, log: DrainLog, replay_id: str) -> int:
    """Note as failed again the letters whose replayed entry the drain has processed without
    writing anything: it dropped them as exact repeats of an existing dead letter. Returns how many."""
    # Cursors first, then the snapshot: every entry behind a cursor had its files written (the
    # drain commits after writing), so the snapshot shows whatever it landed.
    cursors = {t.name: entry_order(log.cursor(t.stream)) for t in EVENT_TYPES.values()}
    con = inspection.open_dead_letters(warehouse, lake)
    if con is None:
        return 0
    with con:
        awaiting = con.execute(AWAITING_SQL, [replay_id]).fetchall()
    now = datetime.now(timezone.utc)
    records = []
    for event_id, event_type, letter_stream_id, replayed_stream_id, fix in awaiting:
        if cursors[event_type] >= entry_order(replayed_stream_id.split("/")[0]):
            records.append({"replay_id": replay_id, "replayed_at": now, "event_id": event_id,
                            "event_type": event_type, "letter_stream_id": letter_stream_id, "fix": fix,
                            "replayed_stream_id": replayed_stream_id, "outcome": FAILED_AGAIN})
    _write_records(lake, f"{replay_id}-settled-{uuid_utils.uuid7()}", 0, records)
    return len(records)


def settle_drained_replays(log: DrainLog, warehouse: Path, lake: Path) -> int:
    """Settle (`settle_replay`) every replay whose entries the drain has now passed, and forget it;
    returns how many letters were noted as failed again. One HGETALL when no replay is waiting;
    a warehouse refresh and one query of the view per replay once its entries are drained."""
    return settle_awaiting(log, warehouse, lake, log.client.hgetall(AWAITING_DRAIN_KEY))


# Forget a replay's note only if it still says what the settle read: a replay still injecting
# (one HSET per chunk of letters) may have noted later entries meanwhile, and the settle took a
# second or two. KEYS: the awaiting hash. ARGV: replay_id, the note as read. Returns 1 if deleted.
_FORGET_IF_UNCHANGED_LUA = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"""


def settle_awaiting(log: DrainLog, warehouse: Path, lake: Path, awaiting: dict[bytes, bytes]) -> int:
    """`settle_drained_replays` for the notes in `awaiting` (replay_id -> note, as read from
    AWAITING_DRAIN_KEY). A note rewritten since it was read survives: its newer entries are
    settled by a later drain."""
    settled = 0
    forget = log.client.register_script(_FORGET_IF_UNCHANGED_LUA)
    for replay_id, last_entry_ids in awaiting.items():
        streams = json.loads(last_entry_ids)
        if all(entry_order(log.cursor(stream)) >= entry_order(last) for stream, last in streams.items()):
            settled += settle_replay(warehouse, lake, log, replay_id.decode())
            forget(keys=[AWAITING_DRAIN_KEY], args=[replay_id, last_entry_ids])
    if settled:
        refresh_warehouse(warehouse, lake)  # analysts see the settled statuses at once
    return settled


def replay_outcomes(warehouse: Path, lake: Path, replay_id: str, log: DrainLog | None = None) -> ReplayOutcomes:
    """Where the letters of `replay_id` stand now, per the dead_letter_events view (settled first
    when `log` is given, see `settle_replay`)."""
    if log is not None:
        settle_replay(warehouse, lake, log, replay_id)
    stats = inspection.dead_letter_stats(warehouse, lake, inspection.LetterFilter(replay_id=replay_id))
    counts = Counter()
    for _event_type, status, letters in stats.by_type:
        counts[status] += letters
    return ReplayOutcomes(replay_id, {s: counts.get(s, 0) for s in REPLAY_STATUSES if counts.get(s)})
