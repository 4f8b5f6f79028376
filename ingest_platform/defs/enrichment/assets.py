"""Enriched events: every landed hour partition, 1:1, with reference context and session features."""

from datetime import datetime

import dagster as dg

from ingest_platform.contract import FEEDBACK_EVENT, USER_INTERACTION
from ingest_platform.defs.enrichment.automation import downstream_hourly_partitions, rebuild_when_inputs_change, same_hour
from ingest_platform.defs.enrichment.common import definition_metadata, expose_in_warehouse, result_metadata
from ingest_platform.defs.resources import LakeResource
from ingest_platform.processing.catalog import ENRICHED_FEEDBACK_EVENTS, ENRICHED_USER_INTERACTIONS, REFERENCE_DATASETS
from ingest_platform.processing.enrichment import SESSION_LOOKBACK_HOURS, enrich_feedback_events, enrich_user_interactions
from ingest_platform.settings import get_settings

REFERENCE_KEYS = [dg.AssetKey(d.name) for d in REFERENCE_DATASETS]

DISABLED_NOTE = ("ENABLE_EVENT_ENRICHMENT=false: nothing written; downstream assets read the landed events "
                 "with every enrichment column NULL.")


def _partition_hour(context: dg.AssetExecutionContext) -> datetime:
    return context.partition_time_window.start


def _enriched_asset(dataset, landed, enrich, references: str):
    @dg.asset(
        name=dataset.name,
        group_name="enrichment",
        kinds={"duckdb", "parquet"},
        description=f"{dataset.description} Left joins to {references}: a missing reference row never drops "
                    f"an event (miss rates in metadata). Session features trace {SESSION_LOOKBACK_HOURS} h around "
                    "the hour. Off with ENABLE_EVENT_ENRICHMENT=false.",
        partitions_def=downstream_hourly_partitions,
        ins={landed.dataset: dg.AssetIn(key=landed.dataset, partition_mapping=same_hour, dagster_type=dg.Nothing)},
        deps=REFERENCE_KEYS,
        metadata=definition_metadata(dataset),
        automation_condition=rebuild_when_inputs_change([dg.AssetKey(landed.dataset)]),
    )
    def enriched(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
        if not get_settings().enable_event_enrichment:
            context.log.info(DISABLED_NOTE)
            return dg.MaterializeResult(metadata={"dagster/row_count": 0, "enrichment": "disabled",
                                                  "note": DISABLED_NOTE})
        result = enrich(lake.lake_dir, _partition_hour(context))
        expose_in_warehouse(lake)
        misses = {f"{name}_miss_rate": rate for name, rate in result.miss_rates.items()}
        return dg.MaterializeResult(metadata=result_metadata(dataset, result.table, **misses))

    return enriched


enriched_user_interactions = _enriched_asset(ENRICHED_USER_INTERACTIONS, USER_INTERACTION,
                                             enrich_user_interactions, "users and tracks")
enriched_feedback_events = _enriched_asset(ENRICHED_FEEDBACK_EVENTS, FEEDBACK_EVENT,
                                           enrich_feedback_events, "recommendations, users and tracks")

enrichment_assets = [enriched_user_interactions, enriched_feedback_events]
