"""Reference data assets: users, tracks and served recommendations, from `<data>/reference/`."""

from pathlib import Path

import dagster as dg

from ingest_platform.defs.enrichment.automation import reference_reload_condition
from ingest_platform.defs.enrichment.common import definition_metadata, expose_in_warehouse, result_metadata
from ingest_platform.defs.resources import LakeResource
from ingest_platform.processing.catalog import REFERENCE_DATASETS, DerivedDataset
from ingest_platform.processing.reference import load_reference, reference_dir


def _reference_asset(dataset: DerivedDataset) -> dg.AssetsDefinition:
    @dg.asset(
        name=dataset.name,
        group_name="enrichment",
        kinds={"parquet", "duckdb"},
        description=f"{dataset.description} Reloaded when missing and hourly; duplicate ids keep the first row.",
        metadata=definition_metadata(dataset),
        automation_condition=reference_reload_condition(),
    )
    def load(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
        loaded = load_reference(dataset, Path(lake.data_dir), lake.lake_dir)
        source = reference_dir(Path(lake.data_dir)) / f"{dataset.name}.parquet"
        if not source.exists():
            context.log.warning(f"{source} does not exist: {dataset.name} is empty, enrichment leaves its columns NULL")
        expose_in_warehouse(lake)
        return dg.MaterializeResult(metadata=result_metadata(
            dataset, loaded.table, source=dg.MetadataValue.path(str(source)),
            duplicates_dropped=loaded.duplicates_dropped))

    return load


reference_assets = [_reference_asset(d) for d in REFERENCE_DATASETS]
