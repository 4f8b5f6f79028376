"""The Dagster code location: `dagster dev -w workspace.yaml` loads `defs` from here."""

import dagster as dg

from ingest_platform.defs.ingestion.assets import dead_letter_spec, landed_event_specs, warehouse_views
from ingest_platform.defs.ingestion.sensors import drain_event_streams, drain_event_streams_job, drain_schedule
from ingest_platform.defs.resources import resources_from_settings
from ingest_platform.settings import get_settings

defs = dg.Definitions(
    assets=[*landed_event_specs, dead_letter_spec, warehouse_views],
    sensors=[drain_event_streams],
    schedules=[drain_schedule],
    jobs=[drain_event_streams_job],
    resources=resources_from_settings(get_settings()),
)
