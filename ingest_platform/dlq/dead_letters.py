"""Dead letters: rows that failed validation, kept with every reason and their raw payload."""

from __future__ import annotations

import polars as pl
import pyarrow as pa

from ingest_platform.contract import DEAD_LETTER_SCHEMA
from ingest_platform.dlq.lineage import PENDING  # files always say pending; the view derives the status


def dead_letter_table(rejected: pl.DataFrame, event_type: str, rejected_by: str) -> pa.Table:
    """The dead-letter rows for `rejected` (a split's failing rows with their `failures`)."""
    frame = rejected.select(
        pl.col("event_id"),
        pl.lit(event_type).alias("event_type"),
        pl.col("stream_id"),
        pl.col("received_at"),
        pl.col("api_key_id"),
        pl.col("raw_payload"),
        pl.col("failures"),
        pl.lit(rejected_by).alias("rejected_by"),
        pl.lit(PENDING).alias("replay_status"),
    )
    return frame.to_arrow().cast(DEAD_LETTER_SCHEMA)
