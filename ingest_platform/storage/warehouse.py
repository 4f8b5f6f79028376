"""The DuckDB warehouse: a small file of views over the Parquet lake.

Readers (analysts, `ingest-platform sql`) open it read-only at any time. The pipeline never holds
a write lock on the file readers use: `refresh_warehouse` builds a new file next to it and renames
it into place, so a reader keeps the file it opened and the next one sees the new views. Data
itself lives in Parquet, so a view sees a newly drained file the moment it is renamed into place.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import duckdb
import pyarrow as pa

from ingest_platform.contract import DEAD_LETTER_DATASET, DEAD_LETTER_SCHEMA, EVENT_TYPES
from ingest_platform.dlq.lineage import DEAD_LETTER_REPLAY_SCHEMA, DEAD_LETTER_REPLAYS_DATASET
from ingest_platform.storage.lake import dataset_files, warehouse_files, warehouse_refresh_lock

# A view over one hive-partitioned dataset. Types of the partition columns are pinned so the view's
# schema does not depend on which directories happen to exist.
LAKE_VIEW_SQL = """
CREATE OR REPLACE VIEW {view} AS
SELECT * FROM read_parquet({glob}, hive_partitioning = true, union_by_name = true,
                           hive_types = {{'date': DATE, 'hour': INTEGER}})
"""


# dead_letter_events: the dead-letter files plus each letter's replay status, derived from the
# replay records (dlq/lineage.py) and from where the replayed entry landed, since Parquet files are
# never rewritten. Built after the datasets it joins (lake_datasets() lists it last).
# One scan of the valid rows' event_id column serves both 'already_valid' (a replayed letter) and
# 'superseded' (a letter never replayed whose event is a valid row now, e.g. a client's corrected
# retry): a semi-join against the letters' ids (few), so its cost is the column scan.
# A letter that failed event_id_unique_in_batch is never 'superseded': the valid row with its id
# is another event (it stays pending; replaying it reports already_valid).
DEAD_LETTER_VIEW_SQL = """
CREATE OR REPLACE VIEW {view} AS
WITH letters AS (
  SELECT * FROM read_parquet({glob}, hive_partitioning = true, union_by_name = true,
                             hive_types = {{'date': DATE, 'hour': INTEGER}})
),
landed AS ({landed}),
replays AS (SELECT * FROM dead_letter_replays WHERE outcome IS NULL),
latest_replay AS (
  SELECT * FROM replays
  QUALIFY row_number() OVER (PARTITION BY letter_stream_id ORDER BY replayed_at DESC, replay_id DESC) = 1
),
landed_replays AS (SELECT DISTINCT stream_id FROM landed
                   WHERE stream_id IN (SELECT replayed_stream_id FROM replays)),
valid_letter_ids AS (SELECT DISTINCT event_id FROM landed
                     WHERE event_id IN (SELECT event_id FROM letters)),
failed_identically AS (SELECT DISTINCT replayed_stream_id FROM dead_letter_replays
                       WHERE outcome = 'failed_again')
SELECT letters.* REPLACE (
         CASE WHEN r.letter_stream_id IS NULL AND v.event_id IS NOT NULL
                   AND NOT list_contains(list_transform(letters.failures, lambda f: f.check),
                                         'event_id_unique_in_batch') THEN 'superseded'
              WHEN r.letter_stream_id IS NULL THEN 'pending'
              WHEN ok.stream_id IS NOT NULL THEN 'succeeded'
              WHEN v.event_id IS NOT NULL THEN 'already_valid'
              WHEN again.stream_id IS NOT NULL OR same.replayed_stream_id IS NOT NULL THEN 'failed_again'
              ELSE 'replayed' END AS replay_status),
       r.replay_id, r.replayed_at, r.fix AS replay_fix, r.replayed_stream_id,
       row_number() OVER (PARTITION BY letters.event_id ORDER BY
         split_part(letters.stream_id, '-', 1)::BIGINT DESC,
         split_part(split_part(letters.stream_id, '-', 2), '/', 1)::BIGINT DESC,
         split_part(letters.stream_id, '/', 2)::BIGINT DESC) = 1 AS is_latest_letter
FROM letters
LEFT JOIN latest_replay r ON r.letter_stream_id = letters.stream_id
LEFT JOIN landed_replays ok ON ok.stream_id = r.replayed_stream_id
LEFT JOIN valid_letter_ids v ON v.event_id = letters.event_id
LEFT JOIN (SELECT DISTINCT stream_id FROM letters) again ON again.stream_id = r.replayed_stream_id
LEFT JOIN failed_identically same ON same.replayed_stream_id = r.replayed_stream_id
"""


def lake_datasets() -> dict[str, pa.Schema]:
    """Every dataset the warehouse exposes, with the schema it has before any file exists."""
    datasets = {t.dataset: t.arrow_schema for t in EVENT_TYPES.values()}
    datasets[DEAD_LETTER_REPLAYS_DATASET] = DEAD_LETTER_REPLAY_SCHEMA
    datasets[DEAD_LETTER_DATASET] = DEAD_LETTER_SCHEMA  # last: its view joins the ones above
    return datasets


def _lake_view_sql(dataset: str, glob: str) -> str:
    if dataset == DEAD_LETTER_DATASET:
        landed = " UNION ALL ".join(f"SELECT event_id, stream_id FROM {t.dataset}" for t in EVENT_TYPES.values())
        return DEAD_LETTER_VIEW_SQL.format(view=dataset, glob=glob, landed=landed)
    return LAKE_VIEW_SQL.format(view=dataset, glob=glob)


def _empty_with_partitions(schema: pa.Schema) -> pa.Table:
    schema = schema.append(pa.field("date", pa.date32())).append(pa.field("hour", pa.int32()))
    return schema.empty_table()


def build_warehouse(con: duckdb.DuckDBPyConnection, lake: Path) -> list[str]:
    """Create one view (or, before its first file, an empty typed table) per dataset."""
    created = []
    for dataset, schema in lake_datasets().items():
        # The view lists its files (the lake's pinned snapshot) instead of globbing: a glob is
        # expanded when a query starts, so a query racing compaction could see an hour's small
        # files and their compacted replacement, or neither; a listed snapshot is swapped
        # atomically with this file (see docs/drain.md, "Compaction").
        files = warehouse_files(lake, dataset)
        if files:
            glob = "[" + ", ".join(duckdb_string(str(f)) for f in files) + "]"
            con.execute(_lake_view_sql(dataset, glob))
        else:
            con.register("empty_dataset", _empty_with_partitions(schema))
            con.execute(f"CREATE OR REPLACE TABLE {dataset} AS SELECT * FROM empty_dataset")
            con.unregister("empty_dataset")
        created.append(dataset)
    # Derived datasets (reference, enriched, aggregates, features) are registered by processing/.
    from ingest_platform.processing.views import build_derived_views

    created += build_derived_views(con, lake)
    return created


def refresh_warehouse(warehouse: Path, lake: Path) -> list[str]:
    """Rebuild the warehouse file beside the old one and atomically put it in place."""
    warehouse.parent.mkdir(parents=True, exist_ok=True)
    tmp = warehouse.parent / f".{warehouse.name}.{os.getpid()}.tmp"
    # One refresh at a time (the drain and maintenance sensors both refresh): a refresh that listed
    # the lake earlier must not rename its older snapshot over a newer one.
    with warehouse_refresh_lock(lake):
        tmp.unlink(missing_ok=True)
        con = duckdb.connect(str(tmp))
        try:
            created = build_warehouse(con, lake)
            con.execute("CHECKPOINT")
        finally:
            con.close()
        os.replace(tmp, warehouse)
    return created


def warehouse_is_current(warehouse: Path, lake: Path) -> bool:
    """True when every dataset that has files is already a view (not the empty placeholder)."""
    if not warehouse.exists():
        return False
    with connect_read_only(warehouse) as con:
        kinds = dict(con.execute("SELECT table_name, table_type FROM information_schema.tables").fetchall())
    from ingest_platform.processing.views import derived_views_current

    return all(
        kinds.get(name) == "VIEW" or (kinds.get(name) and not dataset_files(lake, name))
        for name in lake_datasets()
    ) and derived_views_current(kinds, lake)


def connect_read_only(warehouse: Path) -> duckdb.DuckDBPyConnection:
    if not warehouse.exists():
        raise FileNotFoundError(
            f"no warehouse at {warehouse}: run `ingest-platform warehouse refresh` "
            "or start the platform (`make run`) first"
        )
    return duckdb.connect(str(warehouse), read_only=True)


def duckdb_string(value: str) -> str:
    """A SQL string literal (paths are ours, but quote them properly anyway)."""
    return "'" + value.replace("'", "''") + "'"


# What `ingest-platform sql` runs: one query that reads. A read-only database still lets COPY ... TO,
# EXPORT, ATTACH, INSTALL and SET act outside it, so statements are vetted by DuckDB's own parser.
READ_ONLY_STATEMENTS = frozenset({"SELECT", "EXPLAIN"})  # SELECT includes DESCRIBE, SHOW, SUMMARIZE


class NotReadOnlyError(ValueError):
    pass


# EXPLAIN ANALYZE (or EXPLAIN (ANALYZE)) executes the statement it explains: that one is judged instead.
_EXPLAIN_PREFIX = re.compile(r"^\s*explain\s*(?:\([^)]*\))?\s*(?:analy[sz]e\s+)?", re.IGNORECASE)


def _explains_a_query(con: duckdb.DuckDBPyConnection, explain: str) -> bool:
    try:
        inner = con.extract_statements(_EXPLAIN_PREFIX.sub("", explain, count=1))
    except duckdb.Error:
        return False
    return len(inner) == 1 and inner[0].type.name == "SELECT"


def run_read_only_query(con: duckdb.DuckDBPyConnection, query: str) -> duckdb.DuckDBPyRelation | None:
    """The result of `query` if it is exactly one read-only statement; NotReadOnlyError otherwise."""
    statements = con.extract_statements(query)
    kinds = [statement.type.name for statement in statements]
    if len(statements) == 1 and kinds[0] == "EXPLAIN" and not _explains_a_query(con, statements[0].query):
        raise NotReadOnlyError("EXPLAIN ANALYZE runs the statement it explains: only a query may be explained")
    if len(statements) != 1 or kinds[0] not in READ_ONLY_STATEMENTS:
        raise NotReadOnlyError(
            f"only one read-only query (SELECT, WITH, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN) is allowed; got "
            f"{', '.join(kinds) or 'nothing'}"
        )
    return con.sql(query)

