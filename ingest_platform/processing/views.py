"""Warehouse views over the derived datasets (called by storage/warehouse.py's build)."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa

from ingest_platform.processing.catalog import DERIVED_DATASETS, DerivedDataset

# Hive columns of partitioned layouts are typed explicitly, like the landed datasets' views. The
# columns are `*`, or for datasets with computed columns every column, those computed from the files.
DERIVED_VIEW_SQL = """
CREATE OR REPLACE VIEW {view} AS
SELECT {columns} FROM read_parquet({glob}, union_by_name = true{hive})
"""


def _view_sql(dataset: DerivedDataset, lake: Path) -> str:
    glob = "'" + dataset.glob(lake).replace("'", "''") + "'"
    hive = (f", hive_partitioning = true, hive_types = {dataset.hive_types}" if dataset.hive_types
            else ", hive_partitioning = false")
    return DERIVED_VIEW_SQL.format(view=dataset.name, columns=dataset.view_columns_sql, glob=glob, hive=hive)


def build_derived_views(con: duckdb.DuckDBPyConnection, lake: Path,
                        datasets: tuple[DerivedDataset, ...] = DERIVED_DATASETS) -> list[str]:
    """A view per derived dataset with files, else an empty table with its schema (and hive columns)."""
    for dataset in datasets:
        if dataset.has_files(lake):
            con.execute(_view_sql(dataset, lake))
        else:
            schema = dataset.schema
            if dataset.layout in ("hourly", "daily"):
                schema = schema.append(pa.field("date", pa.date32()))
            if dataset.layout == "hourly":
                schema = schema.append(pa.field("hour", pa.int32()))
            con.register("empty_derived", schema.empty_table())
            con.execute(f"CREATE OR REPLACE TABLE {dataset.name} AS SELECT * FROM empty_derived")
            con.unregister("empty_derived")
    return [d.name for d in datasets]


def derived_views_current(table_types: dict[str, str], lake: Path) -> bool:
    """True when every derived dataset that has files is a view (not the empty placeholder)."""
    return all(table_types.get(d.name) == "VIEW" for d in DERIVED_DATASETS if d.has_files(lake))
