"""Dagster resources: thin handles on the storage layer, configured from `Settings`."""

from pathlib import Path

import dagster as dg

from ingest_platform.settings import Settings
from ingest_platform.storage import event_log
from ingest_platform.storage.event_log import DrainLog


class EventLogResource(dg.ConfigurableResource):
    """The Redis Streams event log."""

    redis_url: str

    def drain_log(self) -> DrainLog:
        return DrainLog(event_log.connect(self.redis_url))


class LakeResource(dg.ConfigurableResource):
    """The Parquet lake and the DuckDB warehouse under the data dir."""

    data_dir: str

    @property
    def lake_dir(self) -> Path:
        return Path(self.data_dir) / "lake"

    @property
    def warehouse_path(self) -> Path:
        return Path(self.data_dir) / "warehouse.duckdb"


def resources_from_settings(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    return {
        "event_log": EventLogResource(redis_url=settings.effective_redis_url),
        "lake": LakeResource(data_dir=str(settings.data_dir)),
    }
