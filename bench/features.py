"""Downstream benchmark: feature rebuild, an hourly aggregate partition, point-in-time retrieval.

    python -m bench.features                 # 10M events, 1M labels (the targets' size)
    python -m bench.features --events 1000000 --labels 100000 --no-feast   # a quick run

Targets (issue 6): all feature views rebuilt <= 10 s; one hourly aggregate partition <= 0.5 s; a
point-in-time training set of 1M labels >= 10x faster than Feast on the same data. Feast runs in its
own virtualenv (bench/.venv-feast, created on demand with `pip install 'feast[duckdb]'`), never in
the project's dependencies; its DuckDB offline store is used (its file store needs > 21 GB here).
Feast's join holds every (label, earlier feature row of the entity) pair in memory, so its memory
grows with labels x history; when it passes its cap, it is retried on smaller label samples and
the ratio is printed at the largest size it finished (ours timed on the same sample).
Times are medians of --repeat runs: wall seconds, and in brackets the CPU seconds of all threads
(steadier than wall time on a machine shared with other work; the load average is printed too).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
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
from ingest_platform.processing import aggregates, engine, features
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
    seconds, _, result = timed_cpu(fn, repeat)
    return seconds, result


def timed_cpu(fn, repeat: int = 1, runs: list[str] | None = None) -> tuple[float, float, object]:
    """Median wall and CPU seconds (CPU: all threads of this process) of `repeat` runs; each run's
    figures (and the load average after it) are appended to `runs` if given."""
    walls, cpus, result = [], [], None
    for _ in range(repeat):
        started, cpu = time.perf_counter(), time.process_time()
        result = fn()
        walls.append(time.perf_counter() - started)
        cpus.append(time.process_time() - cpu)
        if runs is not None:
            runs.append(f"{walls[-1]:.2f} s [{cpus[-1]:.1f} cpu] (load {os.getloadavg()[0]:.2f})")
    return statistics.median(walls), statistics.median(cpus), result


def load_average() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


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


class FeastStopped(RuntimeError):
    def __init__(self, message: str, peak_gb: float):
        super().__init__(message)
        self.peak_gb = peak_gb


def directory_size(directory: Path) -> int:
    total = 0
    for entry in directory.glob("*"):
        try:
            total += entry.stat().st_size
        except FileNotFoundError:  # DuckDB removes spill files as it reads them back
            pass
    return total


def run_feast(python: Path, work: Path, lake: Path, labels: Path, memory_gb: float, spill_gb: float) -> dict:
    """Feast in its own venv, killed if its resident memory passes `memory_gb` (the machine is shared;
    an address-space rlimit is no good here, DuckDB reserves far more virtual memory than it uses).
    Its DuckDB gets a memory_limit below the cap, so it spills (into work/, removed) before that."""
    import psutil

    user, track = (export_view(lake, name, work) for name in ("user_features", "track_features"))
    command = [str(python), str(BENCH_DIR / "_feast_runner.py"), str(work / "feast"), str(user), str(track),
               str(labels), "--memory-gb", f"{memory_gb * 0.75:.1f}", "--spill-gb", f"{spill_gb:g}"]
    out, err = work / "feast.out", work / "feast.err"
    peak = spill_peak = 0
    spill = work / "feast" / "duckdb-spill"
    started = time.perf_counter()
    with open(out, "w") as stdout, open(err, "w") as stderr:
        child = subprocess.Popen(command, stdout=stdout, stderr=stderr)
        watched = psutil.Process(child.pid)
        ticks = 0
        while child.poll() is None:
            try:
                peak = max(peak, watched.memory_info().rss)
            except psutil.NoSuchProcess:
                break
            ticks += 1
            if ticks % 20 == 0:  # every ~2 s: how much DuckDB has spilled to disk
                spill_peak = max(spill_peak, directory_size(spill))
            if peak > memory_gb * 2**30:
                child.kill()
                child.wait()
                shutil.rmtree(work / "feast", ignore_errors=True)
                raise FeastStopped(f"passed its {memory_gb:g} GB memory cap (--feast-memory-gb) after "
                                   f"{time.perf_counter() - started:.0f} s and was stopped", peak / 2**30)
            time.sleep(0.1)
    shutil.rmtree(work / "feast", ignore_errors=True)
    if child.returncode != 0:
        lines = err.read_text().strip().splitlines() or [""]
        error = next((line for line in reversed(lines) if "Error" in line and not line.startswith(" ")), lines[-1])
        raise FeastStopped(f"failed (exit {child.returncode}) after {time.perf_counter() - started:.0f} s: "
                           f"{error.strip()[:400]}", peak / 2**30)
    result = json.loads(out.read_text().strip().splitlines()[-1])
    result["peak_rss_gb"] = peak / 2**30
    result["peak_spill_gb"] = spill_peak / 2**30
    return result


def export_view(lake: Path, name: str, work: Path) -> Path:
    """The feature view as its warehouse view shows it, as one Parquet file for Feast: the lake's
    files leave out the ratios and scores, which the view computes when read."""
    target = work / f"{name}.parquet"
    with engine.connect(lake, datasets=(name,)) as con:
        con.execute(f"COPY (SELECT * FROM {name}) TO {duckdb_string(str(target))} (FORMAT parquet)")
    return target


SAMPLE_LABELS_SQL = """
COPY (SELECT * FROM read_parquet({labels}) USING SAMPLE {rows} ROWS (reservoir, 7)) TO {target} (FORMAT parquet)
"""


def sample_labels(labels: Path, rows: int) -> Path:
    target = labels.with_name(f"labels-{rows}.parquet")
    with duckdb.connect() as con:
        con.execute(SAMPLE_LABELS_SQL.format(labels=duckdb_string(str(labels)), rows=rows,
                                             target=duckdb_string(str(target))))
    return target


def point_in_time(lake: Path, labels: Path, views: list[str], repeat: int) -> tuple[float, float, object]:
    return timed_cpu(lambda: features.get_historical_features(lake, labels, views), repeat)


def compare_with_feast(args, work: Path, lake: Path, labels: Path, views: list[str], ours: float) -> None:
    python, status = ensure_feast()
    if python is None:
        print(f"[point-in-time] Feast: not run: {status}")
        return
    sizes = [args.labels] + [n for n in args.feast_fallback if n < args.labels]
    for size in sizes:
        sample = labels if size == args.labels else sample_labels(labels, size)
        try:
            feast = run_feast(python, work, lake, sample, args.feast_memory_gb, args.feast_spill_gb)
        except (FeastStopped, subprocess.TimeoutExpired) as exc:
            peak = f" (peak {exc.peak_gb:.1f} GB)" if isinstance(exc, FeastStopped) else ""
            print(f"[point-in-time] Feast {FEAST_REQUIREMENT}, {size:,} labels: {exc}{peak}", flush=True)
            continue
        mine = ours
        if size != args.labels:
            mine, cpu, _ = point_in_time(lake, sample, views, args.repeat)
            print(f"[point-in-time] ours on the same {size:,} labels: {mine:.2f} s [{cpu:.1f} cpu]")
        print(f"[point-in-time] Feast {FEAST_REQUIREMENT} (DuckDB offline store, venv {status}), {size:,} labels: "
              f"{feast['seconds']:.2f} s for {feast['rows']:,} rows (peak {feast['peak_rss_gb']:.1f} GB resident, "
              f"{feast['peak_spill_gb']:.1f} GB spilled to disk) -> ours is "
              f"{feast['seconds'] / mine:.1f}x faster (target >= 10x)")
        return
    print("[point-in-time] Feast: finished at none of the sizes tried")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--labels", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--tracks", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=3, help="Runs per timing (the median is printed).")
    parser.add_argument("--no-feast", action="store_true", help="Skip the Feast comparison.")
    parser.add_argument("--feast-memory-gb", type=float, default=12.0,
                        help="Resident-memory cap for the Feast process (on a shared 23 GB machine).")
    parser.add_argument("--feast-spill-gb", type=float, default=45.0,
                        help="Cap on the disk Feast's DuckDB may spill to (in the work dir, removed after).")
    parser.add_argument("--feast-fallback", type=lambda text: [int(n) for n in text.split(",")],
                        default=[500_000, 200_000, 100_000],
                        help="Smaller label samples to try, in order, if Feast cannot finish the full set.")
    parser.add_argument("--keep", type=Path, help="Keep the generated data in this directory.")
    args = parser.parse_args()

    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-features-"))
    lake = work / "lake"
    print(f"machine: {machine()}; {load_average()}")
    print(f"data: {args.events:,} events, {args.users:,} users, {args.tracks:,} tracks over {args.days} days; "
          f"{args.labels:,} labels; in {work}")
    try:
        seconds, labels = timed(lambda: generate(lake, work, args.events, args.labels, args.users, args.tracks,
                                                 args.days))
        print(f"generated in {seconds:.1f} s")

        runs: list[str] = []
        seconds, cpu, built = timed_cpu(lambda: features.materialize_feature_views(lake), args.repeat, runs)
        rows = ", ".join(f"{b.view.name} {b.rows:,} rows" for b in built)
        print(f"[features] all feature views rebuilt: {seconds:.2f} s [{cpu:.1f} cpu] (target <= 10 s) [{rows}]")
        print(f"           runs: {'; '.join(runs)}")
        for name in features.VIEWS:
            one, cpu, _ = timed_cpu(lambda: features.materialize_feature_views(lake, [name]))
            print(f"           {name} alone: {one:.2f} s [{cpu:.1f} cpu]")

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
            seconds, part = timed(lambda: aggregates.build_hourly(TRACK_HOURLY_STATS, lake, hour, False),
                                  repeat=max(3, args.repeat))
            print(f"[aggregate] track_hourly_stats, one partition, {label} ({part.rows:,} rows): {seconds:.3f} s "
                  "(target <= 0.5 s)")

        views = ["user_features", "track_features"]
        seconds, cpu, table = point_in_time(lake, labels, views, args.repeat)
        print(f"[point-in-time] {table.num_rows:,} labels x {len(views)} views "
              f"({table.num_columns} columns), ours: {seconds:.2f} s [{cpu:.1f} cpu]")
        if args.no_feast:
            print("[point-in-time] Feast: skipped (--no-feast)")
        else:
            compare_with_feast(args, work, lake, labels, views, seconds)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
        print(f"done; our peak resident memory {peak:.1f} GB; {load_average()}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
