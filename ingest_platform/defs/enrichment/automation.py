"""How downstream assets keep up on their own: partitions, automation conditions, the sensor.

The drain reports a materialisation of the hour in progress every few seconds. `eager()` would
answer each one with a run; instead a partition remembers that an input changed and is rebuilt at
the next tick of DOWNSTREAM_REFRESH_CRON (every 5 minutes by default): the hour in progress at most
that often, and a closed hour once more after its last change (late data or a replay that lands in
it). The newest partition (the hour in progress; for unpartitioned feature views, the asset) is
refreshed on every tick. Partitions older than DOWNSTREAM_LOOKBACK_HOURS are left alone (backfill
them explicitly).
"""

from datetime import timedelta

import dagster as dg

from ingest_platform.defs.partitions import hourly_partitions
from ingest_platform.settings import get_settings

# The ingestion hours plus the hour in progress (end_offset=1), so the current hour can be built
# before it closes. Same cron and zone as the landed datasets' partitions, so keys line up 1:1.
downstream_hourly_partitions = dg.HourlyPartitionsDefinition(
    start_date=hourly_partitions.start.strftime("%Y-%m-%d-%H:%M"), timezone="UTC", end_offset=1)
downstream_daily_partitions = dg.DailyPartitionsDefinition(
    start_date=hourly_partitions.start.strftime("%Y-%m-%d"), timezone="UTC", end_offset=1)

# The landed hour in progress is reported by the drain before Dagster's ingestion partitions
# include it; depending on it must not fail the run.
same_hour = dg.TimeWindowPartitionMapping(allow_nonexistent_upstream_partitions=True)

DOWNSTREAM_GROUPS = ("enrichment", "analytics", "features")


def rebuild_when_inputs_change(inputs: list[dg.AssetKey] | None = None) -> dg.AutomationCondition:
    """Rebuild a partition at the next cron tick after any of `inputs` (default: any dep) changed."""
    settings = get_settings()
    updated = dg.AutomationCondition.any_deps_updated()
    if inputs:
        updated = updated.allow(dg.AssetSelection.assets(*inputs))
    # Evaluated first and on every tick, so a change seen between two cron ticks is remembered.
    changed_since_last_request = (updated | dg.AutomationCondition.code_version_changed()).since(
        dg.AutomationCondition.newly_requested()).with_label("inputs changed since last request")
    # The hour in progress is not yet a partition of the landed datasets (their partitions end at
    # the last closed hour), so its micro-batches are not seen as updates: refresh the newest
    # partition on every tick instead (for an unpartitioned asset, that is the asset itself).
    newest = dg.AutomationCondition.in_latest_time_window().with_label("newest partition")
    return (
        dg.AutomationCondition.in_latest_time_window(timedelta(hours=settings.downstream_lookback_hours))
        & (changed_since_last_request | newest)
        & dg.AutomationCondition.cron_tick_passed(settings.downstream_refresh_cron).with_label("refresh tick")
        & ~dg.AutomationCondition.in_progress()
        & ~dg.AutomationCondition.any_deps_in_progress()
    ).with_label(f"rebuild on {settings.downstream_refresh_cron} when inputs changed")


def reference_reload_condition() -> dg.AutomationCondition:
    """Reference files are small: load them when missing and once an hour."""
    return (
        dg.AutomationCondition.missing().newly_true()
        | dg.AutomationCondition.cron_tick_passed("0 * * * *")
    ) & ~dg.AutomationCondition.in_progress()


downstream_automation_sensor = dg.AutomationConditionSensorDefinition(
    "downstream_automation",
    target=dg.AssetSelection.groups(*DOWNSTREAM_GROUPS),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Evaluates the downstream assets' automation conditions (on by default).",
)
