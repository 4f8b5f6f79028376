"""The drain: a sensor that moves stream entries into the lake every few seconds.

The drain runs inside the sensor tick and reports each landed file as a materialisation of its
hour partition. Measured (REFERENCE.md): launching a run per tick adds 1.1-6 s before any work
starts, which alone would spend the 5 s freshness budget; a tick adds none.
"""

import json

import dagster as dg

from ingest_platform.defs.partitions import hour_partition_key
from ingest_platform.defs.quality.checks import quality_evaluations
from ingest_platform.defs.resources import EventLogResource, LakeResource
from ingest_platform.drain.micro_batch import DrainReport, drain_all_streams
from ingest_platform.settings import get_settings
from ingest_platform.storage.warehouse import refresh_warehouse, warehouse_is_current


def drain_once(context, event_log: EventLogResource, lake: LakeResource) -> tuple[list, dict]:
    settings = get_settings()
    log = event_log.drain_log()
    reports = drain_all_streams(log, lake.lake_dir, settings.drain_max_entries, settings.enable_dlq_handling)
    if reports and not warehouse_is_current(lake.warehouse_path, lake.lake_dir):
        refresh_warehouse(lake.warehouse_path, lake.lake_dir)
    for report in reports:
        context.log.info(
            f"drained {report.range.stream} ({report.range.start}, {report.range.end}]: "
            f"{report.entries} entries, {report.valid} valid, {report.dead} dead letters"
        )
    return [*materialisations(reports), *quality_evaluations(reports)], log.cursors()


def materialisations(reports: list[DrainReport]) -> list[dg.AssetMaterialization]:
    events = []
    for report in reports:
        for landed in report.files:
            events.append(dg.AssetMaterialization(
                asset_key=landed.dataset,
                partition=hour_partition_key(int(landed.first_id.split("-")[0])),
                metadata={
                    "dagster/row_count": landed.rows,
                    "stream": report.range.stream,
                    "range": f"{landed.first_id}..{landed.last_id}",
                    "bytes": landed.bytes,
                    "path": dg.MetadataValue.path(str(landed.path)),
                    "lag_seconds": round(report.lag_seconds, 3),
                },
            ))
    return events


@dg.sensor(
    name="drain_event_streams",
    minimum_interval_seconds=get_settings().drain_interval_seconds,
    default_status=dg.DefaultSensorStatus.RUNNING if get_settings().enable_realtime_processing
    else dg.DefaultSensorStatus.STOPPED,
    description="Drains every event stream into the lake (valid rows and dead letters).",
)
def drain_event_streams(context: dg.SensorEvaluationContext, event_log: EventLogResource,
                        lake: LakeResource) -> dg.SensorResult:
    events, cursors = drain_once(context, event_log, lake)
    # The authoritative cursor is kept in Redis beside the plan (so commit is atomic); the sensor
    # cursor mirrors it for the UI.
    return dg.SensorResult(asset_events=events, cursor=json.dumps(cursors, sort_keys=True))


@dg.op(description="Drain every event stream once (the schedule's path when realtime is off).")
def drain_event_streams_op(context: dg.OpExecutionContext, event_log: EventLogResource, lake: LakeResource):
    events, _ = drain_once(context, event_log, lake)
    for event in events:
        context.log_event(event)


@dg.job(description="Drain every event stream once.")
def drain_event_streams_job():
    drain_event_streams_op()


drain_schedule = dg.ScheduleDefinition(
    name="drain_event_streams_schedule",
    job=drain_event_streams_job,
    cron_schedule=f"*/{get_settings().drain_schedule_minutes} * * * *",
    default_status=dg.DefaultScheduleStatus.STOPPED if get_settings().enable_realtime_processing
    else dg.DefaultScheduleStatus.RUNNING,
    description="Drains on a slower cadence while ENABLE_REALTIME_PROCESSING is off.",
)


