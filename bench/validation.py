"""Validation speed: the drain's split (pandera, polars backend, every failure of every row collected
with its message) beside the same checks as one DuckDB SQL query, on the same frame in the same run.

    .venv/bin/python -m bench.validation [--rows 1000000] [--invalid 0.01] [--repeat 3]

Target (issue 5): >= 3M rows/s with per-row reasons collected.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from datetime import datetime, timedelta, timezone

import duckdb
import polars as pl

from bench import cpu_model
from ingest_platform.contract import MAX_ID_LENGTH
from ingest_platform.validation import rules as r
from ingest_platform.validation.split import split_valid_rows

RECEIVED = datetime(2026, 11, 26, 10, tzinfo=timezone.utc)
DEFECTS = ("action", "timestamp_ahead", "user_id_charset", "duplicate", "unparseable")

# The same checks as the pandera schema, as one query: one row per failing row with its failures.
DUCKDB_SQL = """
CREATE OR REPLACE TEMP TABLE checked AS
  SELECT *,
    list_filter([
      CASE WHEN event_id IS NULL THEN {{'check': 'required', 'column': 'event_id'}} END,
      CASE WHEN length(event_id) NOT BETWEEN 1 AND {max_len} THEN {{'check': 'id_length', 'column': 'event_id'}} END,
      CASE WHEN NOT regexp_full_match(event_id, '{charset}') THEN {{'check': 'id_charset', 'column': 'event_id'}} END,
      CASE WHEN length(user_id) NOT BETWEEN 1 AND {max_len} THEN {{'check': 'id_length', 'column': 'user_id'}} END,
      CASE WHEN NOT regexp_full_match(user_id, '{charset}') THEN {{'check': 'id_charset', 'column': 'user_id'}} END,
      CASE WHEN length(session_id) NOT BETWEEN 1 AND {max_len} THEN {{'check': 'id_length', 'column': 'session_id'}} END,
      CASE WHEN NOT regexp_full_match(session_id, '{charset}') THEN {{'check': 'id_charset', 'column': 'session_id'}} END,
      CASE WHEN length(track_id) NOT BETWEEN 1 AND {max_len} THEN {{'check': 'id_length', 'column': 'track_id'}} END,
      CASE WHEN NOT regexp_full_match(track_id, '{charset}') THEN {{'check': 'id_charset', 'column': 'track_id'}} END,
      CASE WHEN action NOT IN ({actions}) THEN {{'check': 'action_in_enum', 'column': 'action'}} END,
      CASE WHEN "timestamp" IS NULL THEN {{'check': 'timestamp_parseable', 'column': 'timestamp'}} END,
      CASE WHEN "timestamp" > received_at + INTERVAL 5 MINUTE THEN {{'check': 'timestamp_not_ahead', 'column': 'timestamp'}} END,
      CASE WHEN "timestamp" < received_at - INTERVAL 30 DAY THEN {{'check': 'timestamp_within_horizon', 'column': 'timestamp'}} END,
      CASE WHEN row_number() OVER (PARTITION BY event_id ORDER BY stream_id) > 1
           THEN {{'check': 'event_id_unique_in_batch', 'column': 'event_id'}} END
    ], lambda f: f IS NOT NULL) AS failures
  FROM batch
"""


def make_batch(rows: int, invalid: float) -> pl.DataFrame:
    """A drain-shaped frame (payload columns, envelope, raw JSON); `invalid` of rows carry a defect."""
    step = round(1 / invalid) if invalid else rows + 1
    index = pl.int_range(rows, eager=True)
    defect = pl.when(index % step == 0).then((index // step) % len(DEFECTS)).otherwise(-1)
    frame = pl.DataFrame({"i": index}).with_columns(defect.alias("defect"))
    ts = pl.lit(RECEIVED) - pl.duration(seconds=pl.col("i") % 3600)
    frame = frame.with_columns(
        pl.when(pl.col("defect") == 3).then(pl.format("e{}", pl.col("i") - 1)).otherwise(pl.format("e{}", "i")).alias("event_id"),
        pl.when(pl.col("defect") == 2).then(pl.lit("bad user")).otherwise(pl.format("u{}", pl.col("i") % 10_000)).alias("user_id"),
        pl.format("s{}", pl.col("i") // 20).alias("session_id"),
        pl.format("t{}", pl.col("i") % 50_000).alias("track_id"),
        pl.when(pl.col("defect") == 0).then(pl.lit("PLAY!")).otherwise(pl.lit("play")).alias("action"),
        pl.when(pl.col("defect") == 4).then(None)
        .when(pl.col("defect") == 1).then(ts + pl.duration(hours=2)).otherwise(ts)
        .dt.cast_time_unit("us").alias("timestamp"),
        pl.lit(RECEIVED).dt.cast_time_unit("us").alias("received_at"),
        pl.lit("k1").alias("api_key_id"),
        pl.format("{}-0/0", pl.col("i") + 1_700_000_000_000).alias("stream_id"),
    )
    raw = pl.format('{{"user_interaction": {{"user_id": "{}", "action": "{}", "timestamp": "{}"}}}}',
                    "user_id", "action", pl.when(pl.col("defect") == 4).then(pl.lit("26/11/2026 10:00"))
                    .otherwise(pl.col("timestamp").dt.strftime("%Y-%m-%dT%H:%M:%SZ")))
    return frame.with_columns(raw.alias("raw_payload")).drop("i", "defect")


def time_it(fn, repeat: int) -> tuple[float, float, object]:
    """Median wall seconds, median CPU seconds (all threads of this process), last result. CPU time
    beside wall time shows how much a shared machine's other load stretched the wall figure."""
    times, cpu, result = [], [], None
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = fn()
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(times), statistics.median(cpu), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--invalid", type=float, default=0.01)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    batch = make_batch(args.rows, args.invalid)
    rules = r.QualityRules(max_ahead=timedelta(minutes=5), max_age=timedelta(days=30))
    split_valid_rows("user_interaction", batch.head(1000), rules)  # build the schema outside the timing

    pandera_s, pandera_cpu, split = time_it(lambda: split_valid_rows("user_interaction", batch, rules), args.repeat)
    assert split.valid.height + split.rejected.height == batch.height

    con = duckdb.connect()
    con.execute(f"SET threads = {os.cpu_count()}")
    sql = DUCKDB_SQL.format(max_len=MAX_ID_LENGTH, charset=r.ID_CHARSET_PATTERN.strip("^$"),
                            actions=", ".join(f"'{a}'" for a in r.ENUM_COLUMNS["action"]))

    def duckdb_split():
        con.register("batch", batch.to_arrow())
        con.execute(sql)
        failing = con.sql("SELECT * FROM checked WHERE len(failures) > 0").pl()
        valid = con.sql("SELECT * EXCLUDE (failures) FROM checked WHERE len(failures) = 0").pl()
        return failing, valid

    duck_s, duck_cpu, (failing, duck_valid) = time_it(duckdb_split, args.repeat)

    rows_per_s = args.rows / pandera_s
    print(json.dumps({
        "machine": {"cores": os.cpu_count(), "cpu": cpu_model(), "python": platform.python_version()},
        "rows": args.rows,
        "rejected": {"pandera_polars": split.rejected.height, "duckdb_sql": failing.height},
        "failures_collected": split.failures.height,
        "seconds": {"pandera_polars": round(pandera_s, 3), "duckdb_sql": round(duck_s, 3)},
        "cpu_seconds": {"pandera_polars": round(pandera_cpu, 3), "duckdb_sql": round(duck_cpu, 3)},
        "load_average_1m": round(os.getloadavg()[0], 2),
        "rows_per_second": {"pandera_polars": round(rows_per_s), "duckdb_sql": round(args.rows / duck_s)},
        "speedup_vs_duckdb": round(duck_s / pandera_s, 2),
        "target_rows_per_second": 3_000_000,
        "meets_target": rows_per_s >= 3_000_000,
    }, indent=2))



if __name__ == "__main__":
    main()
