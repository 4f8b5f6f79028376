"""Landed event datasets (written by the drain) and the warehouse views over them."""

from datetime import datetime, timedelta

import dagster as dg

from ingest_platform.contract import DEAD_LETTER_DATASET, EVENT_TYPES
from ingest_platform.defs.partitions import hourly_partitions
from ingest_platform.defs.resources import EventLogResource, LakeResource
from ingest_platform.defs.quality.checks import batch_quality, dead_letter_counts, evaluations
from ingest_platform.dlq.batch_quality import BatchQuality
from ingest_platform.drain.micro_batch import InvalidRowsError
from ingest_platform.drain.replay import ReplayReport, replay_hour
from ingest_platform.settings import get_settings
from ingest_platform.storage.warehouse import refresh_warehouse


def landed_freshness_policy() -> dg.FreshnessPolicy:
    """Fresh while the drain lands something every few intervals: with realtime processing on, a
    sensor drains every DRAIN_INTERVAL_SECONDS; with it off, a schedule every
    DRAIN_SCHEDULE_MINUTES. An idle stream (no traffic) also turns stale: no new data is landing."""
    settings = get_settings()
    if settings.enable_realtime_processing:
        warn = timedelta(seconds=max(60, 6 * settings.drain_interval_seconds))
        return dg.FreshnessPolicy.time_window(fail_window=max(timedelta(minutes=5), 3 * warn), warn_window=warn)
    cadence = timedelta(minutes=settings.drain_schedule_minutes)
    return dg.FreshnessPolicy.time_window(fail_window=3 * cadence, warn_window=2 * cadence)


landed_event_specs = [
    dg.AssetSpec(
        key=event_type.dataset,
        description=f"Valid `{event_type.name}` events, drained from `{event_type.stream}` into "
        f"lake/{event_type.dataset}/date=/hour=/ Parquet, exactly once by event_id. Materialised "
        "by the drain sensor per micro-batch; materialising (or backfilling) an hour replays it "
        "from Redis, idempotently.",
        group_name="ingestion",
        kinds={"parquet", "redis"},
        partitions_def=hourly_partitions,
        freshness_policy=landed_freshness_policy(),
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


@dg.multi_asset(
    name="landed_events",
    specs=[*landed_event_specs, dead_letter_spec],
    partitions_def=hourly_partitions,
    description="Replays one ingestion hour from the Redis streams into the lake (what a backfill "
    "of an hour partition runs). Idempotent: rows already in the lake are not written again.",
)
def landed_events(context: dg.AssetExecutionContext, event_log: EventLogResource, lake: LakeResource):
    """Re-drain every stream's retained entries of the partition's hour, landing only what is missing.

    Reports what it landed like a drain tick does: check results for each stream's replayed batch
    and the dead letters counted by reason. With ENABLE_DLQ_HANDLING off, a stream holding invalid
    rows fails the run after the other streams' rows were landed and reported."""
    settings = get_settings()
    hour: datetime = context.partition_time_window.start
    log = event_log.drain_log()
    reports, failures = [], []
    for event_type in EVENT_TYPES.values():
        try:
            reports.append(replay_hour(log, event_type, lake.lake_dir, hour, settings.enable_dlq_handling))
        except InvalidRowsError as failure:  # replay the other streams, then fail loudly
            failures.append(failure)
    refresh_warehouse(lake.warehouse_path, lake.lake_dir)
    qualities = [quality for report in reports if (quality := _replayed_quality(report, hour)) is not None]
    entries, already, duplicates = (sum(getattr(r, n) for r in reports)
                                    for n in ("entries", "already_landed", "duplicates"))
    context.log.info(f"replayed {hour:%Y-%m-%d %H}:00: {entries} entries, {already} rows already landed, "
                     f"{duplicates} duplicates dropped")
    for key, total in _landed_totals(reports).items():
        metadata = {"dagster/row_count": total["rows"], "bytes": total["bytes"], "files": total["files"],
                    "replayed_entries": entries, "already_landed": already, "duplicates_dropped": duplicates}
        if key == dead_letter_spec.key:
            metadata |= dead_letter_counts(qualities)
        yield dg.MaterializeResult(asset_key=key, metadata=metadata)
    # Logged, not yielded as AssetCheckResults: `data_quality_checks` owns these checks (and, when
    # selected in the same run, re-measures the whole hour after this).
    for quality in qualities:
        for evaluation in evaluations(quality):
            context.log_event(evaluation)
    if failures:
        raise InvalidRowsError("; ".join(str(f) for f in failures))


def _replayed_quality(report: ReplayReport, hour: datetime) -> BatchQuality | None:
    return batch_quality(report.stream, report.files,
                         scope=f"{report.stream} replayed for hour {hour:%Y-%m-%d %H}:00")


def _landed_totals(reports: list[ReplayReport]) -> dict[dg.AssetKey, dict[str, int]]:
    totals = {spec.key: {"rows": 0, "bytes": 0, "files": 0} for spec in (*landed_event_specs, dead_letter_spec)}
    for landed in (landed for report in reports for landed in report.files):
        total = totals[dg.AssetKey(landed.dataset)]
        total["rows"] += landed.rows
        total["bytes"] += landed.bytes
        total["files"] += 1
    return totals


@dg.asset(
    group_name="warehouse",
    kinds={"duckdb"},
    deps=[spec.key for spec in (*landed_event_specs, dead_letter_spec)],
)
def warehouse_views(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    """Rebuild warehouse.duckdb: one view per lake dataset, swapped in atomically."""
    views = refresh_warehouse(lake.warehouse_path, lake.lake_dir)
    return dg.MaterializeResult(metadata={"views": ", ".join(views), "path": str(lake.warehouse_path)})
