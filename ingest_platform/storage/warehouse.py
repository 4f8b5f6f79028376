"""The DuckDB warehouse: a small file of views over the Parquet lake.

Readers (analysts, `ingest-platform sql`) open it read-only at any time. The pipeline never holds
a write lock on the file readers use: `refresh_warehouse` builds a new file next to it and renames
it into place, so a reader keeps the file it opened and the next one sees the new views. Data
itself lives in Parquet, so a view sees a newly drained file the moment it is renamed into place.
"""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import pyarrow as pa

from ingest_platform.contract import DEAD_LETTER_DATASET, DEAD_LETTER_SCHEMA, EVENT_TYPES
from ingest_platform.storage.lake import dataset_files, dataset_glob

# A view over one hive-partitioned dataset. Types of the partition columns are pinned so the view's
# schema does not depend on which directories happen to exist.
LAKE_VIEW_SQL = """
CREATE OR REPLACE VIEW {view} AS
SELECT * FROM read_parquet({glob}, hive_partitioning = true, union_by_name = true,
                           hive_types = {{'date': DATE, 'hour': INTEGER}})
"""


def lake_datasets() -> dict[str, pa.Schema]:
    """Every dataset the warehouse exposes, with the schema it has before any file exists."""
    datasets = {t.dataset: t.arrow_schema for t in EVENT_TYPES.values()}
    datasets[DEAD_LETTER_DATASET] = DEAD_LETTER_SCHEMA
    return datasets


def _empty_with_partitions(schema: pa.Schema) -> pa.Table:
    schema = schema.append(pa.field("date", pa.date32())).append(pa.field("hour", pa.int32()))
    return schema.empty_table()


def build_warehouse(con: duckdb.DuckDBPyConnection, lake: Path) -> list[str]:
    """Create one view (or, before its first file, an empty typed table) per dataset."""
    created = []
    for dataset, schema in lake_datasets().items():
        if dataset_files(lake, dataset):
            glob = duckdb_string(dataset_glob(lake, dataset))
            con.execute(LAKE_VIEW_SQL.format(view=dataset, glob=glob))
        else:
            con.register("empty_dataset", _empty_with_partitions(schema))
            con.execute(f"CREATE OR REPLACE TABLE {dataset} AS SELECT * FROM empty_dataset")
            con.unregister("empty_dataset")
        created.append(dataset)
    return created


def refresh_warehouse(warehouse: Path, lake: Path) -> list[str]:
    """Rebuild the warehouse file beside the old one and atomically put it in place."""
    warehouse.parent.mkdir(parents=True, exist_ok=True)
    tmp = warehouse.parent / f".{warehouse.name}.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    con = duckdb.connect(str(tmp))
    try:
        created = build_warehouse(con, lake)
        con.execute("CHECKPOINT")
    finally:
        con.close()
    os.replace(tmp, warehouse)
    return created


def warehouse_is_current(warehouse: Path, lake: Path) -> bool:
    """True when every dataset that has files is already a view (not the empty placeholder)."""
    if not warehouse.exists():
        return False
    with connect_read_only(warehouse) as con:
        kinds = dict(con.execute("SELECT table_name, table_type FROM information_schema.tables").fetchall())
    return all(
        kinds.get(name) == "VIEW" or (kinds.get(name) and not dataset_files(lake, name))
        for name in lake_datasets()
    )


def connect_read_only(warehouse: Path) -> duckdb.DuckDBPyConnection:
    if not warehouse.exists():
        raise FileNotFoundError(
            f"no warehouse at {warehouse}: run `ingest-platform warehouse refresh` "
            "or start the platform (`make run`) first"
        )
    return duckdb.connect(str(warehouse), read_only=True)


def duckdb_string(value: str) -> str:
    """A SQL string literal (paths are ours, but quote them properly anyway)."""
    return "'" + value.replace("'", "''") + "'"
