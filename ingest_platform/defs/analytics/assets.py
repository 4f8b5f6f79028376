"""Analytics aggregates by event time (hour or day partitions)."""

import dagster as dg

from ingest_platform.contract import FEEDBACK_EVENT, USER_INTERACTION
from ingest_platform.defs.enrichment.automation import (
    downstream_daily_partitions,
    downstream_hourly_partitions,
    rebuild_when_inputs_change,
    same_hour,
)
from ingest_platform.defs.enrichment.common import definition_metadata, expose_in_warehouse, result_metadata
from ingest_platform.defs.resources import LakeResource
from ingest_platform.processing.aggregates import build_daily, build_hourly
from ingest_platform.processing.catalog import (
    ENRICHED_FEEDBACK_EVENTS,
    ENRICHED_USER_INTERACTIONS,
    GENRE_HOURLY_TRENDS,
    RECOMMENDATION_FEEDBACK_STATS,
    TRACK_HOURLY_STATS,
    USER_DAILY_ENGAGEMENT,
)
from ingest_platform.settings import get_settings

# What each aggregate reads: the enriched dataset (or, enrichment off, the landed one beneath it).
SOURCES = {
    TRACK_HOURLY_STATS.name: (ENRICHED_USER_INTERACTIONS, USER_INTERACTION),
    GENRE_HOURLY_TRENDS.name: (ENRICHED_USER_INTERACTIONS, USER_INTERACTION),
    RECOMMENDATION_FEEDBACK_STATS.name: (ENRICHED_FEEDBACK_EVENTS, FEEDBACK_EVENT),
    USER_DAILY_ENGAGEMENT.name: (ENRICHED_USER_INTERACTIONS, USER_INTERACTION),
}

ENRICHMENT_OFF = {
    TRACK_HOURLY_STATS.name: "nothing (uses only landed columns)",
    GENRE_HOURLY_TRENDS.name: "genre: every play counts as 'unknown'",
    RECOMMENDATION_FEEDBACK_STATS.name: "model_version and rank: all feedback in one NULL/NULL row",
    USER_DAILY_ENGAGEMENT.name: "listened_seconds and mean_completion_ratio are NULL",
}


def _aggregate_asset(dataset, daily: bool = False):
    enriched, landed = SOURCES[dataset.name]
    mapping = dg.TimeWindowPartitionMapping(allow_nonexistent_upstream_partitions=True) if daily else same_hour

    @dg.asset(
        name=dataset.name,
        group_name="analytics",
        kinds={"duckdb", "parquet"},
        description=f"{dataset.description} Enrichment off: {ENRICHMENT_OFF[dataset.name]}.",
        partitions_def=downstream_daily_partitions if daily else downstream_hourly_partitions,
        ins={enriched.name: dg.AssetIn(key=enriched.name, partition_mapping=mapping, dagster_type=dg.Nothing)},
        metadata=definition_metadata(dataset),
        automation_condition=rebuild_when_inputs_change(),
    )
    def aggregate(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
        enrichment = get_settings().enable_event_enrichment
        start = context.partition_time_window.start
        built = (build_daily if daily else build_hourly)(dataset, lake.lake_dir, start, enrichment)
        expose_in_warehouse(lake)
        return dg.MaterializeResult(metadata=result_metadata(
            dataset, built.table, source=enriched.name if enrichment else f"{landed.dataset} (enrichment off)"))

    return aggregate


track_hourly_stats = _aggregate_asset(TRACK_HOURLY_STATS)
recommendation_feedback_stats = _aggregate_asset(RECOMMENDATION_FEEDBACK_STATS)
genre_hourly_trends = _aggregate_asset(GENRE_HOURLY_TRENDS)
user_daily_engagement = _aggregate_asset(USER_DAILY_ENGAGEMENT, daily=True)

analytics_assets = [track_hourly_stats, recommendation_feedback_stats, genre_hourly_trends, user_daily_engagement]
