"""The Dagster code location: `dagster dev -w workspace.yaml` loads `defs` from here."""

import dagster as dg

from ingest_platform.defs.analytics.assets import analytics_assets
from ingest_platform.defs.analytics.sensors import late_daily_job, late_events, late_hourly_job
from ingest_platform.defs.enrichment.assets import enrichment_assets
from ingest_platform.defs.enrichment.automation import downstream_automation_sensor
from ingest_platform.defs.features.assets import feature_assets
from ingest_platform.defs.ingestion.assets import landed_events, warehouse_views
from ingest_platform.defs.ingestion.sensors import (
    drain_event_streams,
    drain_event_streams_job,
    drain_schedule,
    maintain_lake_sensor,
)
from ingest_platform.defs.quality.checks import data_quality_checks
from ingest_platform.defs.quality.replay import replay_dead_letters_job
from ingest_platform.defs.reference.assets import reference_assets
from ingest_platform.defs.resources import resources_from_settings
from ingest_platform.settings import get_settings

defs = dg.Definitions(
    assets=[landed_events, warehouse_views,
            *reference_assets, *enrichment_assets, *analytics_assets, *feature_assets],
    sensors=[drain_event_streams, maintain_lake_sensor, downstream_automation_sensor, late_events],
    schedules=[drain_schedule],
    asset_checks=[data_quality_checks],
    jobs=[drain_event_streams_job, replay_dead_letters_job, late_hourly_job, late_daily_job],
    resources=resources_from_settings(get_settings()),
)
