"""Downstream benchmark: feature rebuild, an hourly aggregate partition, point-in-time retrieval.

    python -m bench.features                 # 10M events, 1M labels (the targets' size)
    python -m bench.features --events 1000000 --labels 100000 --no-feast   # a quick run

Targets (issue 6): all feature views rebuilt <= 10 s; one hourly aggregate partition <= 0.5 s; a
point-in-time training set of 1M labels >= 10x faster than Feast on the same data. Feast runs in its
own virtualenv (bench/.venv-feast, created on demand with `pip install 'feast[duckdb]'`), never in
the project's dependencies; its DuckDB offline store is used (its file store needs > 21 GB here).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb

from bench import cpu_model
from ingest_platform.processing import aggregates, features
from ingest_platform.processing.catalog import TRACK_HOURLY_STATS
from ingest_platform.storage.warehouse import duckdb_string

BENCH_DIR = Path(__file__).parent
FEAST_VENV = BENCH_DIR / ".venv-feast"
FEAST_REQUIREMENT = "feast[duckdb]==0.67.0"
START = datetime(2026, 10, 1, tzinfo=timezone.utc)

# Synthetic landed events, written with DuckDB so 10M rows take seconds: skewed users and tracks
# (log-uniform track ranks, a Zipf-like long tail), 30-minute sessions, a realistic action mix.
GENERATE_EVENTS_SQL = """
COPY (
    WITH raw AS (
        SELECT i,
               TIMESTAMPTZ '{start}' + to_microseconds(CAST(random() * {span_us} AS BIGINT)) AS ts,
               CAST(floor(pow(random(), 2) * {users}) AS BIGINT) AS u,
               CAST(floor(exp(random() * ln({tracks}))) - 1 AS BIGINT) AS t,
               random() AS r
        FROM range({events}) AS g(i)
    )
    SELECT 'e' || i AS event_id, 'u' || u AS user_id,
           'u' || u || '-' || CAST(epoch(ts) // 1800 AS BIGINT) AS session_id, 't' || t AS track_id,
           CASE WHEN r < 0.60 THEN 'play' WHEN r < 0.68 THEN 'pause' WHEN r < 0.88 THEN 'skip'
                WHEN r < 0.96 THEN 'like' ELSE 'dislike' END AS action,
           ts AS timestamp, ts + INTERVAL 1 SECOND AS received_at, 'bench' AS api_key_id, '' AS stream_id,
           CAST(ts AS DATE) AS date, hour(ts) AS hour
    FROM raw ORDER BY ts
) TO {target} (FORMAT parquet, COMPRESSION zstd, PARTITION_BY (date, hour))
"""

GENERATE_LABELS_SQL = """
COPY (
    SELECT user_id, track_id, timestamp + to_microseconds(CAST(random() * 7.2e9 AS BIGINT)) AS event_timestamp,
           CAST(action = 'like' AS INTEGER) AS label
    FROM read_parquet({events}, hive_partitioning = true) USING SAMPLE {labels} ROWS
) TO {target} (FORMAT parquet, COMPRESSION zstd)
"""

ALL_HOURS_PER_TRACK_SQL = """
SELECT date_trunc('hour', timestamp) AS event_hour, track_id, count(*) FILTER (WHERE action = 'play') AS plays,
       count(*) FILTER (WHERE action = 'skip') AS skips, count(DISTINCT user_id) AS listeners
FROM read_parquet({events}, hive_partitioning = true) GROUP BY ALL
"""


def machine() -> str:
    return f"{os.cpu_count()} cores, {cpu_model()}, {platform.system()} {platform.release()}, duckdb {duckdb.__version__}"


def timed(fn, repeat: int = 1) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def generate(lake: Path, work: Path, events: int, labels: int, users: int, tracks: int, days: int) -> Path:
    target = lake / "user_interactions"
    lake.mkdir(parents=True, exist_ok=True)
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        con.execute("SELECT setseed(0.42)")
        con.execute(GENERATE_EVENTS_SQL.format(start=START.isoformat(), span_us=days * 86_400 * 10**6, users=users,
                                               tracks=tracks, events=events, target=duckdb_string(str(target))))
        labels_path = work / "labels.parquet"
        con.execute(GENERATE_LABELS_SQL.format(events=duckdb_string(str(target / "*" / "*" / "*.parquet")),
                                               labels=labels, target=duckdb_string(str(labels_path))))
    return labels_path


def ensure_feast() -> tuple[Path | None, str]:
    python = FEAST_VENV / "bin" / "python"
    if python.exists():
        return python, "present"
    try:
        subprocess.run([sys.executable, "-m", "venv", str(FEAST_VENV)], check=True, capture_output=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", FEAST_REQUIREMENT], check=True,
                       capture_output=True, text=True, timeout=1800)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        shutil.rmtree(FEAST_VENV, ignore_errors=True)
        return None, f"could not install {FEAST_REQUIREMENT} into {FEAST_VENV}: {str(detail).strip()[-2000:]}"
    return python, "installed"


def run_feast(python: Path, work: Path, lake: Path, labels: Path, memory_gb: float) -> dict:
    """Feast in its own venv, killed if its resident memory passes `memory_gb` (the machine is shared;
    an address-space rlimit is no good here, DuckDB reserves far more virtual memory than it uses)."""
    import psutil

    user = next((lake / "user_features" / "current").glob("*.parquet"))
    track = next((lake / "track_features" / "current").glob("*.parquet"))
    command = [str(python), str(BENCH_DIR / "feast_runner.py"), str(work / "feast"), str(user), str(track),
               str(labels)]
    out, err = work / "feast.out", work / "feast.err"
    peak = 0
    with open(out, "w") as stdout, open(err, "w") as stderr:
        child = subprocess.Popen(command, stdout=stdout, stderr=stderr)
        watched = psutil.Process(child.pid)
        while child.poll() is None:
            try:
                peak = max(peak, watched.memory_info().rss)
            except psutil.NoSuchProcess:
                break
            if peak > memory_gb * 2**30:
                child.kill()
                child.wait()
                raise RuntimeError(f"Feast passed its {memory_gb:g} GB memory cap (--feast-memory-gb) and was "
                                   "stopped")
            time.sleep(0.2)
    if child.returncode != 0:
        raise RuntimeError(f"feast failed (exit {child.returncode}): {err.read_text().strip()[-1500:]}")
    result = json.loads(out.read_text().strip().splitlines()[-1])
    result["peak_rss_gb"] = peak / 2**30
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--labels", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--tracks", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--no-feast", action="store_true", help="Skip the Feast comparison.")
    parser.add_argument("--feast-memory-gb", type=float, default=12.0,
                        help="Resident-memory cap for the Feast process (its DuckDB offline store passed 19 GB "
                             "on 1M labels x 12M feature rows here, on a 23 GB machine).")
    parser.add_argument("--keep", type=Path, help="Keep the generated data in this directory.")
    args = parser.parse_args()

    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-features-"))
    lake = work / "lake"
    print(f"machine: {machine()}")
    print(f"data: {args.events:,} events, {args.users:,} users, {args.tracks:,} tracks over {args.days} days; "
          f"{args.labels:,} labels; in {work}")
    try:
        seconds, labels = timed(lambda: generate(lake, work, args.events, args.labels, args.users, args.tracks,
                                                 args.days))
        print(f"generated in {seconds:.1f} s")

        seconds, built = timed(lambda: features.materialize_feature_views(lake))
        rows = ", ".join(f"{b.view.name} {b.rows:,} rows" for b in built)
        print(f"[features] all feature views rebuilt: {seconds:.2f} s (target <= 10 s) [{rows}]")
        for name in features.VIEWS:
            one, _ = timed(lambda: features.materialize_feature_views(lake, [name]))
            print(f"           {name}: {one:.2f} s")

        glob = duckdb_string(str(lake / "user_interactions" / "*" / "*" / "*.parquet"))
        with duckdb.connect() as con:
            everything, _ = timed(lambda: con.execute(ALL_HOURS_PER_TRACK_SQL.format(events=glob)).fetchall())
        hours = args.days * 24
        print(f"[aggregate] baseline, per-track stats of every hour in one query: {everything:.2f} s = "
              f"{everything / hours * 1000:.1f} ms per hour of data")
        # The automation builds the newest hours; a backfill of an old hour opens more files (every
        # partition landed from a day before it on, since late events may be anywhere after it).
        for label, hour in (("newest hour", START + timedelta(days=args.days, hours=-1)),
                            ("mid-history hour (backfill)", START + timedelta(days=args.days // 2, hours=13))):
            seconds, part = timed(lambda: aggregates.build_hourly(TRACK_HOURLY_STATS, lake, hour, False), repeat=3)
            print(f"[aggregate] track_hourly_stats, one partition, {label} ({part.rows:,} rows): {seconds:.3f} s "
                  "(target <= 0.5 s)")

        views = ["user_features", "track_features"]
        seconds, table = timed(lambda: features.get_historical_features(lake, labels, views))
        print(f"[point-in-time] {table.num_rows:,} labels x {len(views)} views "
              f"({table.num_columns} columns), DuckDB ASOF JOIN: {seconds:.2f} s")
        if args.no_feast:
            print("[point-in-time] Feast: skipped (--no-feast)")
            return
        python, status = ensure_feast()
        if python is None:
            print(f"[point-in-time] Feast: not run: {status}")
            return
        try:
            feast = run_feast(python, work, lake, labels, args.feast_memory_gb)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            print(f"[point-in-time] Feast: not run: {exc}")
            return
        print(f"[point-in-time] Feast {FEAST_REQUIREMENT} (DuckDB offline store, venv {status}): "
              f"{feast['seconds']:.2f} s for {feast['rows']:,} rows (peak {feast['peak_rss_gb']:.1f} GB) -> ours is {feast['seconds'] / seconds:.1f}x "
              "faster (target >= 10x)")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
