"""A drain (or compaction, or replay) in its own process, killed with SIGKILL at a chosen point.

    python -m ingest_platform_tests.drain.fault_runner MODE REDIS_URL LAKE [ARG]

The fault is injected by replacing one function *in this process only* with one that calls
`os.kill(os.getpid(), 9)`: production code has no fault hooks.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import redis

from ingest_platform.contract import USER_INTERACTION
from ingest_platform.drain import micro_batch
from ingest_platform.storage import event_log, lake as lake_module
from ingest_platform.storage.event_log import DrainLog


def die() -> None:
    os.kill(os.getpid(), 9)


def drain_until_empty(log: DrainLog, lake: Path, max_entries: int, idle_rounds: int = 1) -> None:
    idle = 0
    while idle < idle_rounds:
        try:
            reports = micro_batch.drain_all_streams(log, lake, max_entries)
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
            time.sleep(0.05)  # Redis restarting: retry, like the sensor's next tick would
            continue
        idle = 0 if reports else idle + 1


def main() -> None:
    mode, url, lake_dir = sys.argv[1:4]
    arg = sys.argv[4] if len(sys.argv) > 4 else ""
    lake = Path(lake_dir)
    log = DrainLog(event_log.connect(url))

    if mode == "kill_before_commit":
        # Files of the range are durable; the cursor never moves.
        DrainLog.commit = lambda self, rng, count: die()
        micro_batch.drain_all_streams(log, lake, int(arg or 1000))
    elif mode == "kill_during_write":
        # The process dies with a Parquet file half written (its temporary name holds garbage).
        calls = {"n": 0}
        real_write = lake_module.pq.write_table

        def half_write(table, where, **kwargs):
            calls["n"] += 1
            if calls["n"] >= int(arg or 2):
                where.write(b"PAR1 half a file")
                where.flush()
                die()
            real_write(table, where, **kwargs)

        lake_module.pq.write_table = half_write
        micro_batch.drain_all_streams(log, lake, 1000)
    elif mode == "drain_loop":
        # Keep draining until the stream stays empty for a few rounds (racing drains, restarts).
        drain_until_empty(log, lake, int(arg or 50), idle_rounds=20)
    elif mode == "kill_in_compaction_swap":
        from ingest_platform.drain import compaction

        real_replace, real_finish = os.replace, compaction._finish_swap
        seen = {"n": 0, "swapping": False}

        def replace_then_die(src, dst):
            real_replace(src, dst)
            if seen["swapping"] and str(dst).endswith(".parquet"):
                seen["n"] += 1
                if seen["n"] >= int(arg or 1):
                    die()  # some outputs renamed into place, no input unlinked yet

        def finish_swap(directory):
            seen["swapping"] = True
            real_finish(directory)

        os.replace = replace_then_die
        compaction._finish_swap = finish_swap
        from datetime import timedelta

        compaction.compact_closed_hours(log, lake, timedelta(0), 3)
    elif mode == "kill_in_replay":
        from ingest_platform.drain import replay

        real_publish = replay.publish_parquet_atomic
        seen = {"n": 0}

        def publish_then_die(table, path, lake_root):
            size = real_publish(table, path, lake_root)
            seen["n"] += 1
            if seen["n"] >= 1:
                die()
            return size

        replay.publish_parquet_atomic = publish_then_die
        replay.replay_range(log, USER_INTERACTION, lake, "0-0", "99999999999999-0")
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
