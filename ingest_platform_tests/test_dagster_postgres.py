"""The production Dagster storage (dagster-postgres) records the drain's materialisations.

Opt-in (it needs a PostgreSQL server): INGEST_TEST_POSTGRES_URL=postgresql://postgres@127.0.0.1:5432/test
and `pip install -e '.[postgres]'`. It loads deploy/dagster.postgres.yaml as written.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from urllib.parse import urlparse

import dagster as dg
import httpx
import pytest

from ingest_platform.defs.ingestion.sensors import drain_event_streams
from ingest_platform.defs.resources import resources_from_settings
from ingest_platform.settings import get_settings

POSTGRES_URL = os.environ.get("INGEST_TEST_POSTGRES_URL")
pytestmark = pytest.mark.skipif(not POSTGRES_URL, reason="opt-in: set INGEST_TEST_POSTGRES_URL")
DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "dagster.postgres.yaml"


def test_drain_materialisations_are_stored_in_postgres(gateway, api_key, tmp_path, monkeypatch):
    url = urlparse(POSTGRES_URL)
    for name, value in {"HOST": url.hostname, "PORT": str(url.port or 5432), "USER": url.username or "postgres",
                        "PASSWORD": url.password or "", "DB": url.path.lstrip("/")}.items():
        monkeypatch.setenv(f"DAGSTER_PG_{name}", value)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(DEPLOY, home / "dagster.yaml")
    event = {"user_interaction": {"user_id": "pg", "session_id": "s", "track_id": "t", "action": "play",
                                  "timestamp": "2026-11-26T10:00:00Z"}}
    assert httpx.post(f"{gateway.url}/v1/events", json=event,
                      headers={"Authorization": f"Bearer {api_key}"}).status_code == 202

    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        resources = resources_from_settings(get_settings())
        with dg.build_sensor_context(instance=instance, resources=resources) as context:
            result = drain_event_streams(context)
        for event in result.asset_events:
            instance.report_runless_asset_event(event)
        latest = instance.get_latest_materialization_event(dg.AssetKey("user_interactions"))
        assert latest is not None and latest.asset_materialization.metadata["dagster/row_count"].value == 1
