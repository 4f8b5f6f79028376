"""What dedup costs the drain: CPU of `dedup.claim_frame` and the size of its window.

    flock /tmp/ingest-bench.lock .venv/bin/python -m bench.dedup_cost [--ids uuid|short]
        [--retries 0.005] [--module OLD_DEDUP.py]

1M occurrences claimed in 4 batches of 250k against a private Redis (1% dead letters; `--retries`
of each later batch repeat ids landed in an earlier batch, picked uniformly, so their hash hits
point at every earlier blob). Prints the CPU seconds of this process (all its threads) for the four
claims, for a fresh process's rebuild of the window from the claim log, and the window's bytes per
landed event. `--module` measures another version of dedup.py (e.g. `git show
HEAD:ingest_platform/drain/dedup.py > /tmp/old_dedup.py`), for a before/after. Not a test: run it
under the bench lock, three times, and quote the medians.
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path

import polars as pl
import redis

from ingest_platform.storage.redis_server import RedisServer

HOUR_MS = 1_795_687_200_000
BATCHES, PER_BATCH = 4, 250_000
LETTER_EVERY = 100


def load_dedup(path: str | None):
    if path is None:
        from ingest_platform.drain import dedup
        return dedup
    spec = importlib.util.spec_from_file_location("dedup_under_test", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def batches(kind: str, retries: float, rng: random.Random) -> list[pl.DataFrame]:
    frames, landed = [], []
    retry_every = int(1 / retries) if retries else 0
    for b in range(BATCHES):
        if kind == "short":  # like bench.drain's ids: up to 12 bytes, inlined in Arrow string views
            ids = [f"b-{b * PER_BATCH + k}" for k in range(PER_BATCH)]
        else:  # random UUIDs, like the soak's clients
            ids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(PER_BATCH)]
        if landed and retry_every:
            for k in range(0, PER_BATCH, retry_every):
                ids[k] = landed[rng.randrange(len(landed))]
        kinds = ["d" if k % LETTER_EVERY == LETTER_EVERY // 2 else "v" for k in range(PER_BATCH)]
        digests = ["0" * 24 if k == "d" else "" for k in kinds]
        landed += ids
        frames.append(pl.DataFrame({"kind": kinds, "event_id": ids, "digest": digests}))
    return frames


def window_bytes(window) -> int:
    return sum(run.estimated_size() for run in window.runs)


def measure(dedup, client: redis.Redis, frames: list[pl.DataFrame]) -> dict:
    dedup._windows = dedup._Windows()
    claims_cpu, dropped = 0.0, 0
    for b, frame in enumerate(frames):
        started = time.process_time()
        dropped += len(dedup.claim_frame(client, "cost", HOUR_MS, f"b{b}", frame))
        claims_cpu += time.process_time() - started
    dedup._windows = dedup._Windows()  # a fresh process
    started = time.process_time()
    window, _ = dedup._windows.load(client, "cost", HOUR_MS)
    rebuild_cpu = time.process_time() - started
    landed = sum(frame.height for frame in frames) - dropped - sum(
        (frame["kind"] == "d").sum() for frame in frames)
    return {"claims_cpu_s": round(claims_cpu, 3), "rebuild_cpu_s": round(rebuild_cpu, 3),
            "dropped": dropped, "window_bytes_per_landed_event": round(window_bytes(window) / landed, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ids", choices=("uuid", "short"), default="uuid")
    parser.add_argument("--retries", type=float, default=0.005)
    parser.add_argument("--module", help="another version of dedup.py to measure")
    args = parser.parse_args()
    dedup = load_dedup(args.module)
    frames = batches(args.ids, args.retries, random.Random(7))
    with tempfile.TemporaryDirectory() as directory:
        server = RedisServer(directory=Path(directory)).start()
        try:
            print(measure(dedup, redis.Redis.from_url(server.url), frames))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
