"""Feature views (offline store in the lake, full history) and their online push to Redis.

One multi-asset: the three views share one scan of the landed interactions (keys coded as integers
once), so rebuilding all of them costs less than rebuilding each alone; any subset can still be
selected.
"""

from datetime import datetime, timezone

import dagster as dg

from ingest_platform.contract import USER_INTERACTION
from ingest_platform.defs.enrichment.automation import rebuild_when_inputs_change
from ingest_platform.defs.enrichment.common import definition_metadata, expose_in_warehouse, result_metadata
from ingest_platform.defs.resources import EventLogResource, LakeResource
from ingest_platform.processing import features, online
from ingest_platform.processing.catalog import FEATURE_WINDOWS
from ingest_platform.storage.event_log import connect as connect_redis

# Served by the gateway; the affinity view has an entry per (user, track) pair, which is for
# training sets (offline) rather than per-request lookups.
ONLINE_VIEWS = set(online.ONLINE_VIEWS)


def _spec(view: features.FeatureView) -> dg.AssetSpec:
    serving = view.name in ONLINE_VIEWS
    return dg.AssetSpec(
        key=view.name,
        group_name="features",
        kinds={"duckdb", "parquet"} | ({"redis"} if serving else set()),
        description=f"{view.dataset.description} Entities: {', '.join(view.entity_keys)}; windows "
                    f"{', '.join(FEATURE_WINDOWS)}. Rebuilt in full from the landed events"
                    + ("; the latest values per entity are then pushed to the Redis online store." if serving
                       else "."),
        deps=[dg.AssetKey(USER_INTERACTION.dataset)],
        metadata={**definition_metadata(view.dataset), "entities": ", ".join(view.entity_keys), "online": serving},
        automation_condition=rebuild_when_inputs_change(),
    )


@dg.multi_asset(specs=[_spec(v) for v in features.VIEWS.values()], can_subset=True, name="feature_views")
def feature_views(context: dg.AssetExecutionContext, lake: LakeResource, event_log: EventLogResource):
    """Rebuild the selected feature views and push the served ones online."""
    names = [key.to_user_string() for key in context.selected_asset_keys]
    built = features.materialize_feature_views(lake.lake_dir, names)
    expose_in_warehouse(lake)
    now = datetime.now(timezone.utc)
    for result in built:
        view = result.view
        latest = features.latest_rows(lake.lake_dir, view, now)
        extra = {"entities_served": latest.num_rows, "version": dg.MetadataValue.path(str(result.path))}
        if view.name in ONLINE_VIEWS:
            client = connect_redis(event_log.redis_url)
            try:
                extra["online_entities_pushed"] = online.push_latest(client, view, latest, now)
            finally:
                client.close()
        metadata = result_metadata(view.dataset, latest, **extra)
        metadata["dagster/row_count"] = result.rows  # the whole history; the preview shows latest values
        yield dg.MaterializeResult(asset_key=view.name, metadata=metadata)


feature_assets = [feature_views]
