"""Compaction: closed hours become few files, and a reader never sees a row twice or misses one."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import timedelta

import duckdb
import pytest

from ingest_platform.drain import compaction
from ingest_platform.storage.event_log import DrainLog
from ingest_platform.storage.lake import (
    COMPACTED_PREFIX,
    COMPACTION_JOURNAL,
    PINNED_DIR,
    collect_retired_pins,
    hour_dirs,
    hour_files,
)
from ingest_platform.storage.warehouse import refresh_warehouse
from ingest_platform_tests.drain.helpers import append, append_batches, hour_ms, interaction, landed_ids
from ingest_platform_tests.drain.test_dedup import drain_all
from ingest_platform_tests.drain.test_faults import assert_exactly, run_runner

COUNT_SQL = "SELECT count(*), count(DISTINCT event_id) FROM user_interactions"


@pytest.fixture
def log(redis_client) -> DrainLog:
    return DrainLog(redis_client)


def land_small_files(log: DrainLog, client, lake, hours=(10, 11, 12), entries=12, per_entry=5) -> list[str]:
    """Several closed hours, each as many small files (one drain per two entries)."""
    acknowledged = []
    for hour in hours:
        acknowledged += append_batches(client, f"h{hour}", entries=entries, per_entry=per_entry, id_ms=hour_ms(hour=hour))
    drain_all(log, lake, max_entries=2)
    return acknowledged


def query_counts(warehouse) -> tuple[int, int]:
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        return con.execute(COUNT_SQL).fetchone()
    finally:
        con.close()


READER = """
import sys, time, duckdb
from pathlib import Path
warehouse, stop = sys.argv[1], Path(sys.argv[2])
while not stop.exists():
    con = duckdb.connect(warehouse, read_only=True)  # a fresh analyst connection per query
    try:
        print(*con.execute(sys.argv[3]).fetchone(), flush=True)
    finally:
        con.close()
"""


def start_reader(warehouse, stop) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", READER, str(warehouse), str(stop), COUNT_SQL],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_readers_in_a_loop_never_see_a_row_twice_or_miss_one_during_compaction(log, redis_client, tmp_path):
    """Two reader processes query the warehouse in a loop while every hour is compacted (twice:
    the second time each hour also has a new file), with refreshes racing the swaps."""
    lake, warehouse, stop = tmp_path / "lake", tmp_path / "warehouse.duckdb", tmp_path / "stop"
    acknowledged = land_small_files(log, redis_client, lake, hours=(10, 11, 12, 13))
    refresh_warehouse(warehouse, lake)
    early = duckdb.connect(str(warehouse), read_only=True)  # opened before any swap
    readers = [start_reader(warehouse, stop) for _ in range(2)]
    done = threading.Event()

    def refresher():  # the drain sensor refreshes the views while compaction runs
        while not done.is_set():
            refresh_warehouse(warehouse, lake)

    thread = threading.Thread(target=refresher)
    thread.start()
    try:
        for round_ in range(2):
            for directory in hour_dirs(lake, "user_interactions"):
                compaction.compact_hour(lake, "user_interactions", directory, target_rows=25)
                refresh_warehouse(warehouse, lake)
            late = interaction(f"late-{round_}")  # lands beside the compacted files of hour 13
            append(redis_client, [late], entry_id=f"{hour_ms(hour=13) + 1000 + round_}-0")
            drain_all(log, lake)
            acknowledged.append(late.event_id)
            refresh_warehouse(warehouse, lake)
        time.sleep(0.5)
    finally:
        done.set()
        thread.join()
        stop.touch()
    seen = []
    for reader in readers:
        out, err = reader.communicate(timeout=60)
        assert reader.returncode == 0, err
        seen += [tuple(map(int, line.split())) for line in out.splitlines()]
    n = len(acknowledged)
    assert len(seen) > 10 and set(seen) <= {(n - 2, n - 2), (n - 1, n - 1), (n, n)}, Counter(seen)
    assert (n, n) in seen
    assert early.execute(COUNT_SQL).fetchone() == (n - 2, n - 2)  # its snapshot's files are still pinned
    early.close()
    for directory in hour_dirs(lake, "user_interactions")[:-1]:  # hour 13 got late-1 after its compaction
        assert all(f.name.startswith(COMPACTED_PREFIX) for f in hour_files(directory))
    assert Counter(landed_ids(lake)) == Counter(acknowledged)


def test_compact_closed_hours_waits_for_grace_and_drain(log, redis_client, tmp_path):
    lake = tmp_path / "lake"
    land_small_files(log, redis_client, lake, hours=(10,))
    # An undrained entry of hour 10 still in Redis: the hour is not complete yet.
    append(redis_client, [interaction("straggler")], entry_id=f"{hour_ms(hour=10) + 3_000_000}-0")
    assert compaction.compact_closed_hours(log, lake, timedelta(minutes=10), 1000) == []
    drain_all(log, lake)
    done = compaction.compact_closed_hours(log, lake, timedelta(minutes=10), 1000)
    assert {(d.dataset, d.rows) for d in done} == {("user_interactions", 61)}
    assert compaction.compact_closed_hours(log, lake, timedelta(minutes=10), 1000) == []  # idempotent


def test_retired_files_stay_readable_for_the_grace_then_go(log, redis_client, tmp_path):
    lake = tmp_path / "lake"
    land_small_files(log, redis_client, lake, hours=(10,))
    pinned_before = sorted((lake / PINNED_DIR).rglob("*.parquet"))
    compaction.compact_closed_hours(log, lake, timedelta(0), 1000)
    assert all(p.exists() for p in pinned_before)
    assert collect_retired_pins(lake, grace_seconds=3600) == 0
    assert collect_retired_pins(lake, grace_seconds=0) == len(pinned_before)
    assert len(list((lake / PINNED_DIR).rglob("*.parquet"))) == 1  # the compacted file's pin


def test_kill_during_the_swap_is_finished_by_the_next_compaction(redis_server, redis_client, log, tmp_path):
    lake, warehouse = tmp_path / "lake", tmp_path / "warehouse.duckdb"
    acknowledged = land_small_files(log, redis_client, lake, hours=(10,), entries=10, per_entry=2)
    process = run_runner("kill_in_compaction_swap", redis_server.url, lake, "2")  # after 2 of 7 outputs
    assert process.returncode == -9
    directory = hour_dirs(lake, "user_interactions")[0]
    assert (directory / COMPACTION_JOURNAL).exists()
    visible = hour_files(directory)
    assert any(f.name.startswith(COMPACTED_PREFIX) for f in visible) and \
        any(not f.name.startswith(COMPACTED_PREFIX) for f in visible)  # a raw listing is mid-swap...
    refresh_warehouse(warehouse, lake)
    assert query_counts(warehouse) == (20, 20)  # ...but the warehouse sees one side of it
    compaction.compact_closed_hours(log, lake, timedelta(0), 3)
    assert not (directory / COMPACTION_JOURNAL).exists()
    assert_exactly(lake, acknowledged)
    refresh_warehouse(warehouse, lake)
    assert query_counts(warehouse) == (20, 20)
