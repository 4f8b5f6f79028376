"""The drain: a sensor that moves stream entries into the lake every few seconds, and the lake's
upkeep (compaction, trimming, cleanup) on a slower sensor.

The drain runs inside the sensor tick and reports each landed file as a materialisation of its
hour partition. Measured (REFERENCE.md): launching a run per tick adds 1.1-6 s before any work
starts, which alone would spend the 5 s freshness budget; a tick adds none, and there is never
more than one drain in flight per sensor (a slow tick simply takes a bigger range next time, up
to DRAIN_MAX_ENTRIES entries per stream).
"""

import json
from collections.abc import Callable
from datetime import timedelta

import dagster as dg

from ingest_platform.contract import DEAD_LETTER_DATASET
from ingest_platform.defs.partitions import hour_partition_key
from ingest_platform.defs.quality.checks import quality_evaluations
from ingest_platform.defs.resources import EventLogResource, LakeResource
from ingest_platform.dlq.replay import settle_drained_replays
from ingest_platform.drain.maintenance import MaintenanceReport, maintain_lake
from ingest_platform.drain.micro_batch import DrainReport, InvalidRowsError, drain_all_streams, rejected_by
from ingest_platform.settings import get_settings
from ingest_platform.storage.event_log import DrainLog
from ingest_platform.storage.warehouse import refresh_warehouse


def drain_once(context, event_log: EventLogResource, lake: LakeResource,
               report_before_failing: Callable[[list], None]) -> tuple[list, dict]:
    """Drain every stream once; returns the asset events to report and the committed cursors.

    When a stream fails (`InvalidRowsError`, DLQ handling off), the other streams' ranges are
    already committed: their views are refreshed and their events handed to
    `report_before_failing` before the error is raised, else no later tick would ever report them."""
    settings = get_settings()
    log = event_log.drain_log()
    try:
        reports = drain_all_streams(log, lake.lake_dir, settings.drain_max_entries, settings.enable_dlq_handling)
    except InvalidRowsError as failure:
        report_before_failing(_publish(context, log, lake, failure.reports))
        raise
    return _publish(context, log, lake, reports), log.cursors()


def _publish(context, log: DrainLog, lake: LakeResource, reports: list[DrainReport]) -> list:
    """Make the drained reports visible (warehouse views) and return their asset events."""
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
    events = [*materialisations(reports, lags), *quality_evaluations(reports)]
    _settle_replays(context, log, lake)
    return events


def _settle_replays(context, log: DrainLog, lake: LakeResource) -> None:
    """A replayed letter failing again for the same reasons lands nothing: settle it now
    (dlq/replay.py). After the events are built, and never failing the tick: the ranges are
    committed, so a tick that failed here would lose their reports for good, while a replay left
    unsettled stays noted in Redis and the next tick settles it."""
    try:
        settle_drained_replays(log, lake.warehouse_path, lake.lake_dir)
    except Exception as exc:  # whatever it was, the next tick retries the settle
        context.log.warning(f"settling drained dead-letter replays failed, retried next tick: {exc!r}")


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
                    # the dead letters' `rejected_by`, to find this tick from a letter
                    **({"rejected_by": rejected_by(report.range.stream, landed.first_id, landed.last_id)}
                       if landed.dataset == DEAD_LETTER_DATASET else {}),
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
    def record(events: list) -> None:  # what the daemon does with a SensorResult's asset events
        for event in events:
            context.instance.report_runless_asset_event(event)

    events, cursors = drain_once(context, event_log, lake, report_before_failing=record)
    # The authoritative cursor is kept in Redis beside the plan (so commit is atomic); the sensor
    # cursor mirrors it for the UI.
    return dg.SensorResult(asset_events=events, cursor=json.dumps(cursors, sort_keys=True))


@dg.op(description="Drain every event stream once (the schedule's path when realtime is off).")
def drain_event_streams_op(context: dg.OpExecutionContext, event_log: EventLogResource, lake: LakeResource):
    def record(events: list) -> None:
        for event in events:
            context.log_event(event)

    events, _ = drain_once(context, event_log, lake, report_before_failing=record)
    record(events)


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
