import dagster as dg

from ingest_platform.storage.lake import hour_of_ms

# Ingestion hours. Time-window partitions, not one per micro-batch: Dagster's guidance caps an
# asset at about 100k partitions, which per-batch partitions would pass within a week.
hourly_partitions = dg.HourlyPartitionsDefinition(start_date="2026-01-01-00:00", timezone="UTC")


def hour_partition_key(ms: int) -> str:
    return hour_of_ms(ms).strftime("%Y-%m-%d-%H:%M")
