"""Validation speed: the drain's split (pandera, polars backend, every failure of every row collected
with its message) beside the same checks as one DuckDB SQL query, on the same frame in the same run.

    .venv/bin/python -m bench.validation [--rows 1000000] [--invalid 0.01] [--repeat 3]

Target (issue 5): >= 3M rows/s with per-row reasons collected. The run fails unless both versions
rejected the same rows for the same (check, column) reasons.
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
from ingest_platform.validation.schemas import event_schema
from ingest_platform.validation.split import split_valid_rows

RECEIVED = datetime(2026, 11, 26, 10, tzinfo=timezone.utc)
DEFECTS = ("action", "timestamp_ahead", "user_id_charset", "duplicate", "unparseable")

# The same checks as the pandera schema, as one query: one row per input row with its (check, column)
# failures. Equivalent, not approximately so: the bench asserts both find the same rows and reasons.
# - `required` on every schema column (pandera's not-null check covers them all);
# - the id charset as explicit code point ranges (`re2_id_charset`): RE2's \w is ASCII-only, polars'
#   is Unicode, so '\w' here would reject `josé_müller`, which the contract accepts;
# - duplicates ordered by position in the batch (`__row`), as polars' is_first_distinct is; stream
#   ids do not sort numerically as text;
# - time limits in seconds: `INTERVAL 30 DAY` on a TIMESTAMPTZ is calendar arithmetic in the
#   session's time zone, pandera's is a fixed 720 hours.
DUCKDB_SQL = """
CREATE OR REPLACE TEMP TABLE checked AS
  SELECT * EXCLUDE (__row),
    list_filter([
      {required}
      {ids}
      CASE WHEN action NOT IN ({actions}) THEN {{'check': 'action_in_enum', 'column': 'action'}} END,
      CASE WHEN "timestamp" IS NULL THEN {{'check': 'timestamp_parseable', 'column': 'timestamp'}} END,
      CASE WHEN "timestamp" > received_at + INTERVAL {ahead} SECOND THEN {{'check': 'timestamp_not_ahead', 'column': 'timestamp'}} END,
      CASE WHEN "timestamp" < received_at - INTERVAL {age} SECOND THEN {{'check': 'timestamp_within_horizon', 'column': 'timestamp'}} END,
      CASE WHEN row_number() OVER (PARTITION BY event_id ORDER BY __row) > 1
           THEN {{'check': 'event_id_unique_in_batch', 'column': 'event_id'}} END
    ], lambda f: f IS NOT NULL) AS failures
  FROM batch
"""
REQUIRED_SQL = "CASE WHEN \"{column}\" IS NULL THEN {{'check': 'required', 'column': '{column}'}} END,"
ID_SQL = """CASE WHEN length({column}) NOT BETWEEN 1 AND {max_len} THEN {{'check': 'id_length', 'column': '{column}'}} END,
      CASE WHEN NOT regexp_full_match({column}, '{charset}') THEN {{'check': 'id_charset', 'column': '{column}'}} END,"""


def re2_id_charset() -> str:
    """ID_CHARSET_PATTERN for DuckDB's RE2, as explicit code point ranges: the code points that
    polars' own regex engine accepts, found by asking it about every one (the two engines disagree
    on what \\w means)."""
    points = [p for p in range(0x110000) if not 0xD800 <= p <= 0xDFFF]  # surrogates are not text
    accepted = pl.Series([chr(p) for p in points]).str.contains(r.ID_CHARSET_PATTERN)
    runs = _runs(pl.Series(points).filter(accepted).to_list())
    return "[" + "".join(f"\\x{{{a:X}}}-\\x{{{b:X}}}" for a, b in runs) + "]*"


def _runs(sorted_points: list[int]) -> list[tuple[int, int]]:
    """Consecutive integers as (first, last) runs."""
    runs: list[tuple[int, int]] = []
    for point in sorted_points:
        if runs and point == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], point)
        else:
            runs.append((point, point))
    return runs


def duckdb_sql(rules: r.QualityRules) -> str:
    """DUCKDB_SQL for user_interaction, every limit taken from the same place the schema takes it."""
    schema_columns = event_schema("user_interaction", rules).to_schema().columns
    charset = re2_id_charset()
    return DUCKDB_SQL.format(
        required="\n      ".join(REQUIRED_SQL.format(column=c) for c in schema_columns if c != "timestamp"),
        ids="\n      ".join(ID_SQL.format(column=c, max_len=MAX_ID_LENGTH, charset=charset)
                            for c in r.id_columns("user_interaction")),
        actions=", ".join(f"'{a}'" for a in r.ENUM_COLUMNS["action"]),
        ahead=int(rules.max_ahead.total_seconds()), age=int(rules.max_age.total_seconds()))


def make_batch(rows: int, invalid: float) -> pl.DataFrame:
    """A drain-shaped frame (payload columns, envelope, raw JSON); `invalid` of rows carry a defect."""
    step = round(1 / invalid) if invalid else rows + 1
    index = pl.int_range(rows, eager=True)
    defect = pl.when(index % step == 0).then((index // step) % len(DEFECTS)).otherwise(-1)
    frame = pl.DataFrame({"i": index}).with_columns(defect.alias("defect"))
    ts = pl.lit(RECEIVED) - pl.duration(seconds=pl.col("i") % 3600)
    frame = frame.with_columns(
        pl.when(pl.col("defect") == 3).then(pl.format("e{}", pl.col("i") - 1)).otherwise(pl.format("e{}", "i")).alias("event_id"),
        # Letters of any script are valid ids: one user in 50 has one, so both engines must agree on them.
        pl.when(pl.col("defect") == 2).then(pl.lit("bad user"))
        .when(pl.col("i") % 50 == 1).then(pl.format("josé_müller_{}", pl.col("i") % 10_000))
        .otherwise(pl.format("u{}", pl.col("i") % 10_000)).alias("user_id"),
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


def duckdb_split(con: duckdb.DuckDBPyConnection, sql: str, ordered: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(failing rows with their failures, valid rows) of `ordered` (a batch with a `__row` column)."""
    con.register("batch", ordered.to_arrow())
    con.execute(sql)
    failing = con.sql("SELECT * FROM checked WHERE len(failures) > 0").pl()
    valid = con.sql("SELECT * EXCLUDE (failures) FROM checked WHERE len(failures) = 0").pl()
    return failing, valid


def assert_same_verdicts(pandera_rejected: pl.DataFrame, duckdb_failing: pl.DataFrame) -> None:
    """Both versions rejected the same rows (by stream_id) for the same (check, column) reasons."""
    def verdicts(frame: pl.DataFrame) -> dict[str, list[tuple[str, str]]]:
        return {stream_id: sorted((f["check"], f["column"]) for f in failures)
                for stream_id, failures in frame.select("stream_id", "failures").iter_rows()}

    ours, theirs = verdicts(pandera_rejected), verdicts(duckdb_failing)
    differ = [k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k)]
    assert not differ, f"{len(differ)} rows judged differently, e.g. " + ", ".join(
        f"{k}: pandera {ours.get(k)} duckdb {theirs.get(k)}" for k in sorted(differ)[:3])


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
    sql = duckdb_sql(rules)
    ordered = batch.with_row_index("__row")  # SQL has no row order of its own
    duck_s, duck_cpu, (failing, duck_valid) = time_it(lambda: duckdb_split(con, sql, ordered), args.repeat)
    assert duck_valid.height + failing.height == batch.height
    assert_same_verdicts(split.rejected, failing)

    rows_per_s = args.rows / pandera_s
    print(json.dumps({
        "machine": {"cores": os.cpu_count(), "cpu": cpu_model(), "python": platform.python_version()},
        "rows": args.rows,
        "rejected": {"pandera_polars": split.rejected.height, "duckdb_sql": failing.height},
        "failures_collected": split.failures.height,
        "same_rows_and_reasons": True,  # assert_same_verdicts passed
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
