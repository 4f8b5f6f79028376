"""Late data: rebuild the aggregates of hours that received events after they closed.

An aggregate partition is an event hour; its automation follows the landed partition of the same
hour. An event that lands in a later hour (a client that was offline, a dead letter replayed
after a fix) changes an older event hour's numbers: this sensor finds such hours and asks for
exactly those partitions again, one run per hour and watermark (run_key), never a storm.
"""

from datetime import datetime, timedelta, timezone

import dagster as dg

from ingest_platform.defs.analytics.assets import (
    genre_hourly_trends,
    recommendation_feedback_stats,
    track_hourly_stats,
    user_daily_engagement,
)
from ingest_platform.defs.resources import LakeResource
from ingest_platform.processing.aggregates import late_event_hours
from ingest_platform.settings import get_settings

HOURLY = [track_hourly_stats, recommendation_feedback_stats, genre_hourly_trends]
late_hourly_job = dg.define_asset_job("rebuild_late_hours", selection=HOURLY,
                                      description="Rebuild hourly aggregates of an hour that got late events.")
late_daily_job = dg.define_asset_job("rebuild_late_days", selection=[user_daily_engagement],
                                     description="Rebuild daily engagement of a day that got late events.")


@dg.sensor(
    name="late_events",
    jobs=[late_hourly_job, late_daily_job],
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Rebuilds aggregate partitions of hours that received events after they closed.",
)
def late_events(context: dg.SensorEvaluationContext, lake: LakeResource) -> dg.SensorResult:
    since = datetime.fromisoformat(context.cursor) if context.cursor else datetime.now(timezone.utc) - timedelta(hours=1)
    late, watermark = late_event_hours(lake.lake_dir, since, get_settings().enable_event_enrichment)
    requests, days = [], {}
    for hour in late:
        key = hour.event_hour.strftime("%Y-%m-%d-%H:%M")
        requests.append(dg.RunRequest(job_name=late_hourly_job.name, partition_key=key,
                                      run_key=f"late-hour-{key}-{hour.newest_received_at.isoformat()}"))
        day = hour.event_hour.strftime("%Y-%m-%d")
        days[day] = max(days.get(day, hour.newest_received_at), hour.newest_received_at)
    for day, newest in days.items():
        requests.append(dg.RunRequest(job_name=late_daily_job.name, partition_key=day,
                                      run_key=f"late-day-{day}-{newest.isoformat()}"))
    return dg.SensorResult(run_requests=requests, cursor=watermark.isoformat())
