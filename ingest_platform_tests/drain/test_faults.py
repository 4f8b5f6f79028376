"""Fault injection with real processes and a real Redis: SIGKILL of the drain at its worst moments,
racing drains, and a Redis restart (AOF) mid-stream. Each ends with exactly the acknowledged
events in the lake: same count, same id set, no duplicates."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import redis

from ingest_platform.storage.event_log import DrainLog
from ingest_platform.storage.lake import dataset_files, hour_files
from ingest_platform.storage.redis_server import RedisServer
from ingest_platform_tests.drain.helpers import STREAM, append, append_batches, interaction, landed_ids
from ingest_platform_tests.drain.test_dedup import drain_all

RUNNER = "ingest_platform_tests.drain.fault_runner"


def run_runner(mode: str, url: str, lake: Path, arg: str = "", wait: bool = True) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-m", RUNNER, mode, url, str(lake), arg],
                               env=dict(os.environ), start_new_session=True)
    if wait:
        process.wait(120)
    return process


def assert_exactly(lake: Path, acknowledged: list[str]) -> None:
    landed = landed_ids(lake)
    assert len(landed) == len(acknowledged)
    assert Counter(landed) == Counter(acknowledged)


def test_kill_after_file_write_before_cursor_moves(redis_server, redis_client, tmp_path):
    lake = tmp_path / "lake"
    acknowledged = append_batches(redis_client, "k", entries=50, per_entry=20)
    append(redis_client, [interaction("k-0-0"), interaction("k-30-7")])  # client retries: same ids
    process = run_runner("kill_before_commit", redis_server.url, lake, "20")
    assert process.returncode == -9
    assert dataset_files(lake, "user_interactions")  # the file is there, the cursor is not moved
    assert DrainLog(redis_client).cursor(STREAM) == "0-0"
    drain_all(DrainLog(redis_client), lake)
    assert_exactly(lake, acknowledged)


def test_kill_during_the_parquet_write(redis_server, redis_client, tmp_path):
    lake = tmp_path / "lake"
    acknowledged = append_batches(redis_client, "w", entries=40, per_entry=10)
    append_batches(redis_client, "w", entries=2, per_entry=10)  # retries of the requests w-0 and w-1
    process = run_runner("kill_during_write", redis_server.url, lake, "1")
    assert process.returncode == -9
    leftovers = [p for p in (lake / "user_interactions").rglob("*") if p.is_file()]
    assert leftovers and all(p.name.startswith(".") for p in leftovers)  # only a temporary, never a .parquet
    drain_all(DrainLog(redis_client), lake)
    assert_exactly(lake, acknowledged)


def test_two_drains_racing_while_events_arrive(redis_server, redis_client, tmp_path):
    lake = tmp_path / "lake"
    acknowledged: list[str] = []
    stop = threading.Event()

    def produce():
        client = redis.Redis.from_url(redis_server.url)
        i = 0
        while not stop.is_set() and i < 300:
            events = [interaction(f"race-{i}-{j}") for j in range(5)]
            if i % 7 == 0 and i:  # a client retry of the previous request
                events += [interaction(f"race-{i - 1}-0")]
            append(client, events)
            acknowledged.extend(e.event_id for e in events)
            i += 1
            time.sleep(0.002)

    producer = threading.Thread(target=produce)
    producer.start()
    racers = [run_runner("drain_loop", redis_server.url, lake, "7", wait=False) for _ in range(2)]
    producer.join()
    for racer in racers:
        assert racer.wait(120) == 0
    drain_all(DrainLog(redis_client), lake)
    assert_exactly(lake, sorted(set(acknowledged)))
    assert len(acknowledged) > len(set(acknowledged))  # there were retries to remove


def test_redis_killed_and_restarted_with_aof_mid_stream(tmp_path):
    """appendfsync always: an acknowledged XADD is on disk, so SIGKILL of Redis loses nothing."""
    server = RedisServer(directory=tmp_path / "redis", appendfsync="always").start()
    lake = tmp_path / "lake"
    try:
        client = redis.Redis.from_url(server.url)
        acknowledged = append_batches(client, "a", entries=100, per_entry=10)
        drainer = run_runner("drain_loop", server.url, lake, "5", wait=False)
        time.sleep(0.5)
        server.stop(kill=True)  # mid-stream: the drain is somewhere inside its ranges
        server.start()
        client = redis.Redis.from_url(server.url)
        acknowledged += append_batches(client, "b", entries=100, per_entry=10)
        assert drainer.wait(120) == 0
        drain_all(DrainLog(client), lake)
        assert_exactly(lake, acknowledged)
        entries_added = client.xinfo_stream(STREAM)["entries-added"]
        assert DrainLog(client).lag(STREAM)[0] == 0 and entries_added == 200  # backlog counter exact
    finally:
        server.stop(kill=True)


def test_graceful_redis_restart_keeps_cursor_plan_and_dedup_state(own_redis, tmp_path):
    lake = tmp_path / "lake"
    client = redis.Redis.from_url(own_redis.url)
    acknowledged = append_batches(client, "g", entries=20, per_entry=5)
    log = DrainLog(client)
    planned = log.plan_next_range(STREAM, 10)
    own_redis.restart()  # SIGTERM: AOF flushed
    client = redis.Redis.from_url(own_redis.url)
    log = DrainLog(client)
    assert log.plan_next_range(STREAM, 10) == planned
    append(client, [interaction("g-0-0")])  # a retry arriving after the restart
    drain_all(log, lake)
    assert_exactly(lake, acknowledged)
    assert all(hour_files(d) for d in (lake / "user_interactions").glob("date=*/hour=*"))
