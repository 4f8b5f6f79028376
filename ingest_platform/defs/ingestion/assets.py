"""Landed event datasets (written by the drain) and the warehouse views over them."""

import dagster as dg

from ingest_platform.contract import DEAD_LETTER_DATASET, EVENT_TYPES
from ingest_platform.defs.partitions import hourly_partitions
from ingest_platform.defs.resources import LakeResource
from ingest_platform.storage.warehouse import refresh_warehouse

landed_event_specs = [
    dg.AssetSpec(
        key=event_type.dataset,
        description=f"Valid `{event_type.name}` events, drained from `{event_type.stream}` into "
        f"lake/{event_type.dataset}/date=/hour=/ Parquet. Materialised by the drain sensor.",
        group_name="ingestion",
        kinds={"parquet", "redis"},
        partitions_def=hourly_partitions,
    )
    for event_type in EVENT_TYPES.values()
]

dead_letter_spec = dg.AssetSpec(
    key=DEAD_LETTER_DATASET,
    description="Rows that failed validation, with every reason and the raw payload as received.",
    group_name="quality",
    kinds={"parquet"},
    partitions_def=hourly_partitions,
)


@dg.asset(
    group_name="warehouse",
    kinds={"duckdb"},
    deps=[spec.key for spec in (*landed_event_specs, dead_letter_spec)],
)
def warehouse_views(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    """Rebuild warehouse.duckdb: one view per lake dataset, swapped in atomically."""
    views = refresh_warehouse(lake.warehouse_path, lake.lake_dir)
    return dg.MaterializeResult(metadata={"views": ", ".join(views), "path": str(lake.warehouse_path)})
