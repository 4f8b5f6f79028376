"""The drain: a sensor that moves stream entries into the lake every few seconds, and the lake's
upkeep (compaction, trimming, cleanup) on a slower sensor.

The drain runs inside the sensor tick and reports each landed file as a materialisation of its
hour partition. Measured (REFERENCE.md): launching a run per tick adds 1.1-6 s before any work
starts, which alone would spend the 5 s freshness budget; a tick adds none, and there is never
more than one drain in flight per sensor (a slow tick simply takes a bigger range next time, up
to DRAIN_MAX_ENTRIES entries per stream).
"""

import json
from datetime import timedelta

import dagster as dg

from ingest_platform.defs.partitions import hour_partition_key
from ingest_platform.defs.quality.checks import quality_evaluations
from ingest_platform.defs.resources import EventLogResource, LakeResource
from ingest_platform.drain.maintenance import MaintenanceReport, maintain_lake
from ingest_platform.drain.micro_batch import DrainReport, drain_all_streams
from ingest_platform.settings import get_settings
from ingest_platform.storage.event_log import DrainLog
from ingest_platform.storage.warehouse import refresh_warehouse


def drain_once(context, event_log: EventLogResource, lake: LakeResource) -> tuple[list, dict]:
    """Drain every stream once; returns the asset events to report and the committed cursors."""
    settings = get_settings()
    log = event_log.drain_log()
    reports = drain_all_streams(log, lake.lake_dir, settings.drain_max_entries, settings.enable_dlq_handling)
    if any(report.files for report in reports) or not lake.warehouse_path.exists():
        # Views list their files (a snapshot), so every batch that lands files swaps in new views.
        refresh_warehouse(lake.warehouse_path, lake.lake_dir)
    lags = consumer_lag(log)
    for report in reports:
        context.log.info(
            f"drained {report.range.stream} ({report.range.start}, {report.range.end}]: "
            f"{report.entries} entries, {report.valid} valid, {report.dead} dead letters, "
            f"{report.duplicates} duplicates dropped"
            + (" (superseded: another drain committed this range)" if report.superseded else "")
        )
    return [*materialisations(reports, lags), *quality_evaluations(reports)], log.cursors()


def consumer_lag(log: DrainLog) -> dict[str, tuple[int, float]]:
    """stream -> (undrained entries, seconds since the oldest undrained entry was stored)."""
    from ingest_platform.contract import EVENT_TYPES

    return {t.stream: log.lag(t.stream) for t in EVENT_TYPES.values()}


def materialisations(reports: list[DrainReport], lags: dict[str, tuple[int, float]] | None = None
                     ) -> list[dg.AssetMaterialization]:
    lags = lags or {}
    events = []
    for report in reports:
        lag_entries, lag_seconds = lags.get(report.range.stream, (0, 0.0))
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
                    "duplicates_dropped": report.duplicates,
                    "consumer_lag_entries": lag_entries,
                    "consumer_lag_seconds": round(lag_seconds, 3),
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


def maintain_once(event_log: EventLogResource, lake: LakeResource) -> MaintenanceReport:
    settings = get_settings()
    report = maintain_lake(
        event_log.drain_log(), lake.lake_dir,
        retention=timedelta(hours=settings.drain_retention_hours),
        compaction_grace=timedelta(minutes=settings.compaction_grace_minutes),
        target_rows=settings.compaction_target_rows,
        retired_grace=timedelta(minutes=settings.retired_files_grace_minutes),
    )
    if report.compacted:
        refresh_warehouse(lake.warehouse_path, lake.lake_dir)
    return report


@dg.sensor(
    name="maintain_lake",
    minimum_interval_seconds=get_settings().maintenance_interval_seconds,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Compacts closed hours, trims drained entries past retention, forgets old dedup "
    "state and deletes files retired by compaction after their grace period.",
)
def maintain_lake_sensor(context: dg.SensorEvaluationContext, event_log: EventLogResource,
                         lake: LakeResource) -> dg.SensorResult:
    report = maintain_once(event_log, lake)
    events = [
        dg.AssetMaterialization(
            asset_key=done.dataset,
            partition=hour_partition_key(int(done.hour.timestamp() * 1000)),
            description="compacted",
            metadata={"dagster/row_count": done.rows, "files_before": done.inputs,
                      "files_after": len(done.outputs), "bytes": done.bytes},
        )
        for done in report.compacted
    ]
    trimmed = sum(t.removed for t in report.trimmed)
    context.log.info(f"compacted {len(report.compacted)} hours, trimmed {trimmed} entries, dropped "
                     f"{report.dedup_hashes_dropped} dedup hashes, collected {report.pins_collected} "
                     f"retired files{'; ' + report.skipped if report.skipped else ''}")
    return dg.SensorResult(asset_events=events)
