"""SQL and shell metacharacters in ids travel as data, never as code: through the gateway, the
drain, the lake and the warehouse, and through the CLI commands that take user filters. The
`sql` command runs raw SQL by design, so it must be read-only."""

from __future__ import annotations

import json

import dagster as dg
import duckdb
import httpx
import pytest
from typer.testing import CliRunner

from ingest_platform.cli import app
from ingest_platform.defs.ingestion.assets import warehouse_views
from ingest_platform.defs.ingestion.sensors import drain_event_streams
from ingest_platform.defs.resources import resources_from_settings
from ingest_platform.settings import get_settings
from ingest_platform_tests.reliability.support import bearer

INJECTIONS = [
    "x'); DROP VIEW user_interactions; --",
    "' OR '1'='1",
    "\"; DROP TABLE dead_letter_events; --",
    "'; COPY (SELECT 1) TO '/tmp/pwned.csv'; --",
    "$(touch /tmp/pwned)", "`touch /tmp/pwned`", "a; rm -rf / #", "x' || (SELECT version()) || '",
    "read_parquet('/etc/passwd')", "%s%n", "\\'; --",
]
# Ids with SQL-ish characters that are inside the id charset: they are valid and land as rows.
VALID_TRICKY_IDS = ["x--", "u#1", "a=b", "../../etc/passwd", "a/-/b", "~root", "@@version", "s:1+1=2"]
TIMESTAMP = "2026-11-26T10:00:00Z"


def interaction(event_id: str, user_id: str) -> dict:
    return {"user_interaction": {"user_id": user_id, "session_id": user_id, "track_id": user_id,
                                 "action": "play", "timestamp": TIMESTAMP, "event_id": event_id}}


def drain_and_refresh() -> None:
    resources = resources_from_settings(get_settings())
    with dg.instance_for_test() as instance, \
            dg.build_sensor_context(instance=instance, resources=resources) as context:
        drain_event_streams(context)
        assert dg.materialize([warehouse_views], resources=resources, instance=instance).success


def query(warehouse, sql: str, params=()) -> list[tuple]:
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


def cli(*args: str):
    return CliRunner().invoke(app, list(args))


@pytest.fixture
def landed(gateway, api_key, platform_env, tmp_path):
    """Hostile ids posted over HTTP and drained into the lake and warehouse."""
    events = [interaction(f"bad-{i}-{text}", text) for i, text in enumerate(INJECTIONS)]
    events += [interaction(text, text) for text in VALID_TRICKY_IDS]
    response = httpx.post(f"{gateway.url}/v1/events", json={"events": events}, headers=bearer(api_key))
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == len(events)  # value problems pass the gateway (documented)
    drain_and_refresh()
    return platform_env / "warehouse.duckdb"


def test_hostile_ids_come_back_verbatim_and_the_warehouse_is_intact(landed):
    valid = query(landed, "SELECT event_id, user_id, session_id, track_id FROM user_interactions ORDER BY event_id")
    assert valid == sorted((text, text, text, text) for text in VALID_TRICKY_IDS)

    letters = dict(query(landed, "SELECT event_id, raw_payload FROM dead_letter_events"))
    assert set(letters) == {f"bad-{i}-{text}" for i, text in enumerate(INJECTIONS)}
    for i, text in enumerate(INJECTIONS):  # the payload exactly as sent
        assert json.loads(letters[f"bad-{i}-{text}"])["user_interaction"]["user_id"] == text

    # Every view (or, before its first file, placeholder table) is still there: nothing was dropped.
    names = {name for (name,) in query(landed, "SELECT table_name FROM information_schema.tables")}
    assert {"user_interactions", "feedback_events", "dead_letter_events"} <= names


def test_cli_filters_are_parameters_not_sql(landed):
    for text in INJECTIONS + ["%", "_", "*"]:
        for args in (["dlq", "list", "--check", text], ["dlq", "list", "--column", text],
                     ["dlq", "list", "--type", text], ["dlq", "stats", "--check", text],
                     ["dlq", "replay", "--event-id", text, "--dry-run"]):
            result = cli(*args)
            assert result.exit_code in (0, 1, 2), (args, result.output)
            assert result.exception is None or isinstance(result.exception, SystemExit), (args, result.exception)
            assert any(nothing in result.output for nothing in (
                "no dead letters match", "0 dead letters", "0 selected")) or result.exit_code != 0, (args, result.output)
    # A filter equal to a hostile id finds exactly that letter: the value was compared, not parsed.
    result = cli("dlq", "replay", "--event-id", f"bad-0-{INJECTIONS[0]}", "--dry-run")
    assert result.exit_code == 0 and "1 selected" in result.output, result.output
    assert query(landed, "SELECT count(*) FROM user_interactions") == [(len(VALID_TRICKY_IDS),)]
    assert query(landed, "SELECT count(*) FROM dead_letter_events") == [(len(INJECTIONS),)]


WRITES = [
    "DROP VIEW user_interactions",
    "CREATE TABLE pwned AS SELECT 1",
    "SELECT 1; DROP VIEW user_interactions",
    "COPY (SELECT * FROM user_interactions) TO '{out}'",
    "EXPORT DATABASE '{outdir}'",
    "ATTACH '{outdir}.duckdb' AS other",
    "INSTALL httpfs",
    "SET threads = 1; SELECT 1",
    "EXPLAIN ANALYZE COPY (SELECT * FROM user_interactions) TO '{out}'",  # EXPLAIN ANALYZE runs what it explains
    "explain (analyze) copy (select 1) to '{out}'",
    "PRAGMA enable_profiling = 'json'; PRAGMA profiling_output = '{out}'; SELECT 1",
]


def test_the_sql_command_is_read_only(landed, tmp_path):
    out, outdir = tmp_path / "stolen.csv", tmp_path / "export"
    for statement in WRITES:
        result = cli("sql", statement.format(out=out, outdir=outdir))
        assert result.exit_code == 1, (statement, result.output)
        assert not out.exists() and not outdir.exists() and not (tmp_path / "export.duckdb").exists(), statement
    assert query(landed, "SELECT count(*) FROM user_interactions") == [(len(VALID_TRICKY_IDS),)]


def test_the_sql_command_still_answers_queries(landed):
    for statement in ("SELECT count(*) AS n FROM user_interactions", "FROM user_interactions SELECT count(*) AS n",
                      "WITH x AS (SELECT * FROM user_interactions) SELECT count(*) AS n FROM x"):
        result = cli("sql", "--format", "csv", statement)
        assert result.exit_code == 0 and result.output == f"n\n{len(VALID_TRICKY_IDS)}\n", result.output
    assert cli("sql", "DESCRIBE user_interactions").exit_code == 0
    assert cli("sql", "EXPLAIN SELECT * FROM user_interactions").exit_code == 0
    assert cli("sql", "EXPLAIN ANALYZE SELECT count(*) FROM user_interactions").exit_code == 0
