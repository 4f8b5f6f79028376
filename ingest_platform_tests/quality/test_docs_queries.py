"""The example queries in docs/quality.md run against a real warehouse."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb

from ingest_platform.dlq.inspection import LetterFilter
from ingest_platform.dlq.replay import replay_dead_letters
from ingest_platform.settings import get_settings

from .helpers import enqueue, feedback, interaction, run_drain_sensor

DOC = Path(__file__).resolve().parents[2] / "docs" / "quality.md"


def test_documented_queries_run(platform_env, redis_client):
    enqueue(redis_client, [interaction(), interaction(action="PLAY!"), feedback(rating=9.0)])
    run_drain_sensor()
    settings = get_settings()
    replay_dead_letters(redis_client, settings.lake_dir, settings.warehouse_path, LetterFilter(), fix="clean_action")
    run_drain_sensor()
    blocks = re.findall(r"```sql\n(.*?)```", DOC.read_text(), flags=re.S)
    statements = [s.strip() for block in blocks for s in block.split(";") if s.strip()]
    assert len(statements) >= 5
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        for statement in statements:
            con.execute(statement).fetchall()
