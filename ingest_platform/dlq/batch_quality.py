"""Data-quality figures of one drained batch (or one lake hour): what the asset checks report.

Pure functions over the files a drain wrote (dead-letter files are small; valid files are only
opened for their footer), so the drain itself needs no change to be checked.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from ingest_platform.contract import DEAD_LETTER_DATASET, EVENT_TYPES
from ingest_platform.storage.lake import current_hour_files, hour_dirs, hour_of_dir, partition_dir
from ingest_platform.validation.rules import RULE_FAMILIES, family_of


@dataclass
class BatchQuality:
    event_type: str
    scope: str  # what was measured: a drained stream range, or a lake hour
    valid_rows: int = 0
    dead_letters: int = 0
    by_check: Counter = field(default_factory=Counter)  # check -> letters failing it
    by_column: Counter = field(default_factory=Counter)  # column -> letters failing on it
    by_family: Counter = field(default_factory=Counter)  # rule family -> letters failing any of its checks
    samples: dict[str, str] = field(default_factory=dict)  # check -> one message, for people
    contract_mismatches: list[str] = field(default_factory=list)  # valid files not matching the contract
    letters_without_reasons: int = 0  # dead letters lacking a failure or their raw payload (a bug)
    files: list[str] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return self.valid_rows + self.dead_letters

    @property
    def dead_letter_rate(self) -> float:
        return self.dead_letters / self.rows if self.rows else 0.0



def measure(event_type: str, valid_files: list[Path], dead_files: list[Path], scope: str) -> BatchQuality:
    quality = BatchQuality(event_type, scope, files=[str(p) for p in (*valid_files, *dead_files)])
    contract = EVENT_TYPES[event_type].arrow_schema
    for path in valid_files:
        metadata = pq.ParquetFile(path).metadata
        quality.valid_rows += metadata.num_rows
        schema = metadata.schema.to_arrow_schema()
        if not schema.remove_metadata().equals(contract, check_metadata=False):
            quality.contract_mismatches.append(f"{path.name}: {_schema_diff(schema, contract)}")
    if dead_files:
        letters = pl.read_parquet(dead_files, columns=["event_type", "raw_payload", "failures"])
        letters = letters.filter(pl.col("event_type") == event_type)
        quality.dead_letters = letters.height
        _count_failures(quality, letters)
    return quality


def _count_failures(quality: BatchQuality, letters: pl.DataFrame) -> None:
    quality.letters_without_reasons = letters.filter(
        pl.col("raw_payload").is_null() | (pl.col("failures").list.len().fill_null(0) == 0)).height
    failures = (letters.with_row_index("letter").explode("failures").drop_nulls("failures")
                .with_columns(pl.col("failures").struct.unnest()))
    if failures.is_empty():
        return
    by_check = failures.group_by("check").agg(pl.col("letter").n_unique().alias("n"), pl.col("message").first())
    for check, n, message in by_check.iter_rows():
        quality.by_check[check] = n
        quality.samples[check] = message
    for column, n in failures.group_by("column").agg(pl.col("letter").n_unique()).iter_rows():
        quality.by_column[column] = n
    family = pl.col("check").replace_strict({c: family_of(c) for c in quality.by_check}, return_dtype=pl.String)
    for name, n in failures.group_by(family.alias("family")).agg(pl.col("letter").n_unique()).iter_rows():
        quality.by_family[name] = n


def _schema_diff(actual, expected) -> str:
    want = {f.name: str(f.type) for f in expected}
    have = {f.name: str(f.type) for f in actual}
    missing = sorted(set(want) - set(have))
    extra = sorted(set(have) - set(want))
    retyped = sorted(n for n in set(want) & set(have) if want[n] != have[n])
    return f"missing {missing}, unexpected {extra}, retyped {retyped}"


def families_for(event_type: str):
    return [family for family in RULE_FAMILIES if family.applies_to(event_type)]


def latest_hour_quality(lake: Path) -> list[BatchQuality]:
    """Quality of the most recent lake hour of each event type (for checks run on demand)."""
    letter_hours = {hour_of_dir(d) for d in hour_dirs(lake, DEAD_LETTER_DATASET)}
    results = []
    for event_type in EVENT_TYPES.values():
        hours = {hour_of_dir(d) for d in hour_dirs(lake, event_type.dataset)} | letter_hours
        if hours:
            results.append(_measure_hour(lake, event_type.name, max(hours)))
    return results


def hour_quality(lake: Path, hour: datetime) -> list[BatchQuality]:
    """Quality of one lake hour for every event type (a partition's checks). An hour without data
    measures as zero rows, which passes: there is nothing wrong in it."""
    return [_measure_hour(lake, event_type.name, hour) for event_type in EVENT_TYPES.values()]


def _measure_hour(lake: Path, event_type: str, hour: datetime) -> BatchQuality:
    dataset = EVENT_TYPES[event_type].dataset
    return measure(event_type, _current_files(partition_dir(lake, dataset, hour)),
                   _current_files(partition_dir(lake, DEAD_LETTER_DATASET, hour)),  # `measure` keeps this type's
                   scope=f"lake hour {hour:%Y-%m-%d %H}:00")


def _current_files(directory: Path) -> list[Path]:
    # current_hour_files, not a glob: during a compaction swap an hour's rows sit in two sets of files.
    return current_hour_files(directory) if directory.is_dir() else []
