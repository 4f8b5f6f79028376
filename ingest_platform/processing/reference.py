"""Reference data: users, tracks and served recommendations, loaded from `<data>/reference/`.

The files are Parquet (`users.parquet`, `tracks.parquet`, `recommendations.parquet`) with at least
the catalogue's columns; extra columns are ignored, missing optional ones become NULL. Loading
copies them into the lake (one snapshot file each), so the warehouse and the enrichment read one
consistent version even while a new reference file is being dropped in.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ingest_platform.processing.catalog import REFERENCE_DATASETS, DerivedDataset
from ingest_platform.processing.engine import write_snapshot


def reference_dir(data_dir: Path) -> Path:
    return data_dir / "reference"


@dataclass(frozen=True)
class LoadedReference:
    dataset: DerivedDataset
    rows: int
    duplicates_dropped: int
    table: pa.Table


def load_reference(dataset: DerivedDataset, data_dir: Path, lake: Path) -> LoadedReference:
    """Copy one reference file into the lake with the catalogue's schema (an empty one if absent)."""
    source = reference_dir(data_dir) / f"{dataset.name}.parquet"
    table = pq.read_table(source) if source.exists() else dataset.schema.empty_table()
    columns = [table.column(c.name).cast(c.type) if c.name in table.column_names
               else pa.nulls(table.num_rows, c.type) for c in dataset.columns]
    table = pa.Table.from_arrays(columns, schema=dataset.schema)
    deduped = _first_per_key(table, dataset.columns[0].name)
    write_snapshot(dataset, lake, deduped)
    return LoadedReference(dataset, deduped.num_rows, table.num_rows - deduped.num_rows, deduped)


def _first_per_key(table: pa.Table, key: str) -> pa.Table:
    """Keep the first row per id, so a left join can never multiply events."""
    indexed = table.append_column("__row", pa.array(range(table.num_rows), pa.int64()))
    first = indexed.group_by(key, use_threads=False).aggregate([("__row", "min")])
    keep = pc.is_in(indexed["__row"], first["__row_min"])
    return table.filter(keep)


def load_all_references(data_dir: Path, lake: Path) -> list[LoadedReference]:
    return [load_reference(d, data_dir, lake) for d in REFERENCE_DATASETS]
