"""Replay lineage: which dead letter was replayed when, with which fix, as which new stream entry.

Dead-letter Parquet files are immutable, so a replay never edits them: it appends one record per
letter to the `dead_letter_replays` dataset, and the warehouse's `dead_letter_events` view derives
each letter's `replay_status` from those records and from where the replayed entry landed
(storage/warehouse.py, DEAD_LETTER_VIEW_SQL). Letters are kept for lineage, never deleted.
"""

from __future__ import annotations

import pyarrow as pa

DEAD_LETTER_REPLAYS_DATASET = "dead_letter_replays"

DEAD_LETTER_REPLAY_SCHEMA = pa.schema(
    [
        pa.field("replay_id", pa.string()),  # one `dlq replay` (or Dagster replay run)
        pa.field("replayed_at", pa.timestamp("us", tz="UTC")),
        pa.field("event_id", pa.string()),  # the original event_id, re-injected unchanged
        pa.field("event_type", pa.string()),
        pa.field("letter_stream_id", pa.string()),  # the dead letter replayed (its stream_id)
        pa.field("fix", pa.string()),  # the named fix applied, or null
        pa.field("replayed_stream_id", pa.string()),  # "<new entry id>/<index>"; null if not re-injected
        # null: a replay record. "failed_again": a later note that the drain processed the replayed
        # entry and dropped it as an exact repeat of an existing dead letter (same payload, same
        # failures: the drain keeps one letter per event and reasons), so it failed again as before.
        pa.field("outcome", pa.string()),
    ]
)

# A letter's replay_status, as the dead_letter_events view derives it (see docs/quality.md).
PENDING = "pending"  # never replayed
REPLAYED = "replayed"  # re-injected; the drain has not landed it yet
SUCCEEDED = "succeeded"  # the replayed entry landed as a valid row
FAILED_AGAIN = "failed_again"  # the replayed entry failed again: a new letter with its new reasons, or
#                                the same reasons as this letter (then no new letter is written)
ALREADY_VALID = "already_valid"  # the event_id is a valid row already (not re-injected, or deduplicated)
SUPERSEDED = "superseded"  # never replayed, and its event_id is a valid row now (e.g. a client's
#                            corrected retry): nothing left to do. Never said of a letter failing
#                            event_id_unique_in_batch, whose id belongs to another event.
REPLAY_STATUSES = (PENDING, REPLAYED, SUCCEEDED, FAILED_AGAIN, ALREADY_VALID, SUPERSEDED)
