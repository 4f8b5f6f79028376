"""Shared by the downstream assets: metadata (column schemas, row counts, previews) and making a
newly written dataset visible in the warehouse."""

import dagster as dg
import pyarrow as pa

from ingest_platform.defs.resources import LakeResource
from ingest_platform.processing.catalog import DerivedDataset
from ingest_platform.storage.warehouse import refresh_warehouse, warehouse_is_current

PREVIEW_ROWS = 10


def column_schema(dataset: DerivedDataset) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(c.name, str(c.type), description=c.description)
                                   for c in dataset.columns])


def definition_metadata(dataset: DerivedDataset) -> dict:
    """Static metadata on the asset definition, so the UI shows columns before any run."""
    return {"dagster/column_schema": column_schema(dataset), "dagster/table_name": dataset.name,
            "layout": dataset.layout}


def result_metadata(dataset: DerivedDataset, table: pa.Table, **extra) -> dict:
    return {"dagster/row_count": table.num_rows, "dagster/column_schema": column_schema(dataset),
            "preview": dg.MetadataValue.md(markdown_preview(table)), **extra}


def markdown_preview(table: pa.Table, rows: int = PREVIEW_ROWS) -> str:
    head = table.slice(0, rows).to_pylist()
    if not head:
        return "_no rows_"
    names = table.column_names
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    for row in head:
        lines.append("| " + " | ".join(_cell(row[n]) for n in names) + " |")
    return "\n".join(lines)


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value).replace("|", "\\|")


def expose_in_warehouse(lake: LakeResource) -> bool:
    """Swap in a warehouse whose views include datasets that just got their first file (atomic
    rename: readers holding the old file keep it). Views re-glob, so later files need nothing."""
    if warehouse_is_current(lake.warehouse_path, lake.lake_dir):
        return False
    refresh_warehouse(lake.warehouse_path, lake.lake_dir)
    return True
