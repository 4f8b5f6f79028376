"""Soak: steady load for a long time; memory must stay flat, lag bounded, errors at zero.

    .venv/bin/python -m bench.soak --minutes 30          # the on-demand run
    .venv/bin/python -m bench.soak --minutes 1           # a quick look

A private Redis (AOF everysec), a real gateway process (`ingest-platform gateway`) and a drain
process that evaluates the `drain_event_streams` sensor in a loop every DRAIN_INTERVAL_SECONDS
(the production interval; the Dagster daemon would tick every 6-7 s at that setting). First the
gateway's capacity is measured with this load generator (`--probe-seconds` at full speed, the
baseline), then load runs at `--fraction` of it (1% invalid events, so the dead-letter path
works too). Every `--sample-seconds`: gateway RSS (all its processes), drain RSS, Redis used
memory, undrained entries and the age of the oldest one (lag), requests and errors.

Verdicts: memory is flat when the median of the last quarter of samples is within 10% (+8 MB)
of the median of the first quarter (samples in the first 20% of the run, up to 60 s, are warm-up
and not compared). For the drain, that is its RSS less its dedup window, which the drain reports
(`dedup.window_bytes`): the window holds 8 bytes per event of the last two ingestion hours by
design, so it grows through a run shorter than that; it is printed beside the RSS, and must stay
within 12 bytes per event accepted in the run. Lag is bounded when no sample after warm-up is
older than 4 drain intervals + 10 s; errors are zero when no request got anything but a 202 and
none failed in transit.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import redis

from bench.drain import machine
from ingest_platform.contract import EVENT_TYPES
from ingest_platform.drain import dedup
from ingest_platform.storage import api_keys
from ingest_platform.storage.event_log import DrainLog
from ingest_platform.storage.redis_server import RedisServer, free_port

ACTIONS = ("play", "pause", "skip", "like", "dislike")
INVALID_EVERY = 100  # 1% of events carry an unknown action: dead letters downstream


# --- the drain process ----------------------------------------------------------------------------

WINDOW_FILE_ENV = "SOAK_DEDUP_WINDOW_FILE"  # where the drain loop reports its dedup window's bytes


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def drain_loop(interval: float) -> None:
    """Evaluate the drain sensor every `interval` seconds and the lake upkeep sensor (compaction,
    trimming past retention) every MAINTENANCE_INTERVAL_SECONDS, as the daemon would, until killed."""
    import dagster as dg

    from ingest_platform.defs.ingestion.sensors import drain_event_streams, maintain_lake_sensor
    from ingest_platform.defs.resources import resources_from_settings
    from ingest_platform.settings import get_settings

    settings = get_settings()
    resources = resources_from_settings(settings)
    window_file = os.environ.get(WINDOW_FILE_ENV)
    last_upkeep = time.monotonic()
    with dg.instance_for_test() as instance:
        while True:
            started = time.monotonic()
            sensors = [drain_event_streams]
            if started - last_upkeep >= settings.maintenance_interval_seconds:
                sensors.append(maintain_lake_sensor)
                last_upkeep = started
            for sensor in sensors:
                try:
                    with dg.build_sensor_context(instance=instance, resources=resources) as context:
                        sensor(context)
                except Exception as exc:  # keep going: a failed tick is retried by the next one
                    print(json.dumps({"drain_error": repr(exc)}), file=sys.stderr, flush=True)
            if window_file:
                _write_atomically(Path(window_file), str(dedup.window_bytes()))
            time.sleep(max(0.0, interval - (time.monotonic() - started)))


# --- load -----------------------------------------------------------------------------------------

@dataclass
class Tally:
    requests: int = 0
    events: int = 0
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, events: int, error: str | None) -> None:
        with self.lock:
            self.requests += 1
            if error is None:
                self.events += events
            else:
                self.errors += 1
                self.error_kinds[error] = self.error_kinds.get(error, 0) + 1


def batch(size: int, counter: int) -> dict:
    events = []
    for i in range(size):
        n = counter * size + i
        action = "rewind" if n % INVALID_EVERY == 0 else ACTIONS[n % len(ACTIONS)]
        events.append({"user_interaction": {
            "user_id": f"u{n % 5000}", "session_id": f"s{n % 800}", "track_id": f"t{n % 20000}",
            "action": action, "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "event_id": str(uuid.uuid4())}})
    return {"events": events}


def sender(url: str, key: str, size: int, interval: float | None, stop: threading.Event, tally: Tally,
           offset: int) -> None:
    """Post batches back to back (interval None) or one every `interval` seconds, on schedule."""
    counter = offset * 10_000_000
    next_at = time.monotonic()
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=10) as http:
        while not stop.is_set():
            if interval is not None:
                delay = next_at - time.monotonic()
                if delay > 0:
                    stop.wait(delay)
                    if stop.is_set():
                        return
                next_at += interval
            counter += 1
            try:
                response = http.post("/v1/events", json=batch(size, counter))
                error = None if response.status_code == 202 else f"http {response.status_code}"
            except httpx.HTTPError as exc:
                error = type(exc).__name__
            tally.add(size, error)


def run_load(url: str, key: str, threads: int, size: int, rate: float | None, stop: threading.Event,
             tally: Tally) -> list[threading.Thread]:
    interval = None if rate is None else threads * size / rate
    workers = [threading.Thread(target=sender, args=(url, key, size, interval, stop, tally, i), daemon=True)
               for i in range(threads)]
    for worker in workers:
        worker.start()
    return workers


def measure_capacity(url: str, key: str, threads: int, size: int, seconds: float) -> float:
    stop, tally = threading.Event(), Tally()
    workers = run_load(url, key, threads, size, None, stop, tally)
    time.sleep(1.0)  # connections and caches warm
    start_events, started = tally.events, time.monotonic()
    time.sleep(seconds)
    rate = (tally.events - start_events) / (time.monotonic() - started)
    stop.set()
    for worker in workers:
        worker.join()
    return rate


# --- observation ----------------------------------------------------------------------------------

def rss_mb(process: subprocess.Popen) -> float:
    try:
        root = psutil.Process(process.pid)
        tree = [root, *root.children(recursive=True)]
        return sum(p.memory_info().rss for p in tree) / 2**20
    except psutil.NoSuchProcess:
        return float("nan")


@dataclass
class Sample:
    t: float
    gateway_mb: float
    drain_mb: float
    window_mb: float  # the drain's dedup window (part of drain_mb)
    redis_mb: float
    lag_entries: int
    lag_seconds: float
    requests: int
    errors: int


def sample(t0: float, gateway, drain, client: redis.Redis, log: DrainLog, tally: Tally, window_file: Path) -> Sample:
    lags = [log.lag(t.stream) for t in EVENT_TYPES.values()]
    window_mb = int(window_file.read_text()) / 2**20 if window_file.exists() else 0.0
    return Sample(
        t=time.monotonic() - t0, gateway_mb=rss_mb(gateway), drain_mb=rss_mb(drain), window_mb=window_mb,
        redis_mb=client.info("memory")["used_memory"] / 2**20,
        lag_entries=sum(e for e, _ in lags), lag_seconds=max(s for _, s in lags),
        requests=tally.requests, errors=tally.errors)


def verdicts(samples: list[Sample], seconds: float, drain_interval: float, events: int) -> dict:
    warm = min(60.0, 0.2 * seconds)
    steady = [s for s in samples if s.t >= warm] or samples
    quarter = max(1, len(steady) // 4)
    first, last = steady[:quarter], steady[-quarter:]
    out = {}
    measures = {"gateway_mb": lambda s: s.gateway_mb, "drain_mb": lambda s: s.drain_mb,
                "drain_less_window_mb": lambda s: s.drain_mb - s.window_mb}
    for name, measure in measures.items():
        a = statistics.median(measure(s) for s in first)
        b = statistics.median(measure(s) for s in last)
        out[name] = (a, b, b <= a * 1.10 + 8)
    window_bytes = samples[-1].window_mb * 2**20
    out["window"] = (samples[-1].window_mb, window_bytes / max(events, 1), window_bytes <= 12 * max(events, 1))
    bound = 4 * drain_interval + 10
    out["lag"] = (max(s.lag_seconds for s in steady), max(s.lag_entries for s in steady),
                  all(s.lag_seconds <= bound for s in steady), bound)
    return out


def print_table(samples: list[Sample], rate: float) -> None:
    print(f"{'t (s)':>7} {'gateway MB':>11} {'drain MB':>9} {'(window)':>9} {'redis MB':>9} {'lag entries':>12} "
          f"{'lag s':>6} {'requests':>9} {'errors':>7}")
    for s in samples:
        print(f"{s.t:>7.0f} {s.gateway_mb:>11.1f} {s.drain_mb:>9.1f} {s.window_mb:>9.1f} {s.redis_mb:>9.1f} "
              f"{s.lag_entries:>12} {s.lag_seconds:>6.1f} {s.requests:>9} {s.errors:>7}")


# --- the run --------------------------------------------------------------------------------------

def soak(minutes: float, fraction: float, threads: int, size: int, sample_seconds: float | None,
         probe_seconds: float, drain_interval: int, workers: int, retention_minutes: float) -> dict:
    seconds = minutes * 60
    sample_every = sample_seconds or max(2.0, min(60.0, seconds / 20))
    with tempfile.TemporaryDirectory(prefix="ingest-soak-") as tmp:
        root = Path(tmp)
        server = RedisServer(directory=root / "redis", appendfsync="everysec").start()
        data = root / "data"
        data.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ENABLE_", "DRAIN_", "GATEWAY_"))}
        # A short retention, so trimming runs within the soak and Redis memory levels off too.
        env.update(REDIS_URL=server.url, INGEST_DATA_DIR=str(data), DRAIN_INTERVAL_SECONDS=str(drain_interval),
                   DRAIN_RETENTION_HOURS=str(retention_minutes / 60))
        client = redis.Redis.from_url(server.url)
        key, _ = api_keys.create_key(client, "soak", rate_per_second=1e9, burst=10**9)
        port = free_port()
        gateway = subprocess.Popen([sys.executable, "-m", "ingest_platform.cli", "gateway", "--port", str(port),
                                    "--workers", str(workers)], env=env, start_new_session=True,
                                   stderr=open(root / "gateway.log", "wb"))
        drain = None
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_for(url)
            window_file = root / "dedup_window_bytes"
            drain = subprocess.Popen([sys.executable, "-m", "bench.soak", "--drain-loop", str(drain_interval)],
                                     env={**env, WINDOW_FILE_ENV: str(window_file)}, start_new_session=True,
                                     stderr=open(root / "drain.log", "wb"))
            capacity = measure_capacity(url, key, threads, size, probe_seconds)
            rate = capacity * fraction
            print(f"capacity {capacity:,.0f} events/s (this load generator, {threads} threads x {size}-event "
                  f"batches, {probe_seconds:g} s); soaking at {fraction:g} of it = {rate:,.0f} events/s "
                  f"for {minutes:g} min", flush=True)
            time.sleep(drain_interval * 2)  # let the drain catch up on the probe's burst
            log = DrainLog(client)
            stop, tally = threading.Event(), Tally()
            t0 = time.monotonic()
            senders = run_load(url, key, threads, size, rate, stop, tally)
            samples = []
            while time.monotonic() - t0 < seconds:
                time.sleep(min(sample_every, max(0.0, seconds - (time.monotonic() - t0))))
                samples.append(sample(t0, gateway, drain, client, log, tally, window_file))
                if gateway.poll() is not None or drain.poll() is not None:
                    raise RuntimeError("the gateway or the drain died; see their logs")
            stop.set()
            for worker in senders:
                worker.join()
            drain_errors = (root / "drain.log").read_text(errors="replace").count('"drain_error"')
            result = {"capacity": capacity, "rate": rate, "achieved": tally.events / seconds, "samples": samples,
                      "requests": tally.requests, "errors": tally.errors, "error_kinds": tally.error_kinds,
                      "drain_errors": drain_errors, **verdicts(samples, seconds, drain_interval, tally.events)}
        finally:
            for process in (gateway, drain):
                if process is not None and process.poll() is None:
                    os.killpg(process.pid, 15)
                    process.wait(15)
            client.close()
            server.stop()
    return result


def _wait_for(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError("gateway not ready")


def report(result: dict) -> bool:
    print_table(result["samples"], result["rate"])
    g0, g1, g_flat = result["gateway_mb"]
    d0, d1, _ = result["drain_mb"]
    r0, r1, d_flat = result["drain_less_window_mb"]
    window_mb, window_per_event, window_ok = result["window"]
    lag_s, lag_n, bounded, bound = result["lag"]
    errors_ok = result["errors"] == 0 and result["drain_errors"] == 0
    print(f"machine: {machine()}")
    print(f"load: {result['achieved']:,.0f} events/s achieved of {result['rate']:,.0f} targeted "
          f"({result['rate'] / result['capacity']:.2f}x the measured capacity of {result['capacity']:,.0f}/s)")
    print(f"gateway RSS: first quarter {g0:.1f} MB, last quarter {g1:.1f} MB ({g1 / g0:.2f}x): "
          f"{'flat' if g_flat else 'GROWING'}")
    print(f"drain RSS:   first quarter {d0:.1f} MB, last quarter {d1:.1f} MB ({d1 / d0:.2f}x); less its dedup "
          f"window: {r0:.1f} -> {r1:.1f} MB ({r1 / r0:.2f}x): {'flat' if d_flat else 'GROWING'}")
    print(f"dedup window at the end: {window_mb:.1f} MB = {window_per_event:.1f} B per event accepted in the run "
          f"(kept for two ingestion hours by design): {'as designed' if window_ok else 'OVER 12 B PER EVENT'}")
    print(f"lag: max {lag_s:.1f} s, max {lag_n} entries after warm-up: "
          f"{'bounded' if bounded else 'UNBOUNDED'} (bound {bound:.0f} s)")
    print(f"errors: {result['errors']} of {result['requests']} requests {result['error_kinds'] or ''}, "
          f"{result['drain_errors']} failed drain ticks: {'none' if errors_ok else 'ERRORS'}")
    return g_flat and d_flat and window_ok and bounded and errors_ok


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--fraction", type=float, default=0.3, help="of the measured capacity")
    parser.add_argument("--threads", type=int, default=4, help="load generator threads")
    parser.add_argument("--batch", type=int, default=20, help="events per request")
    parser.add_argument("--sample-seconds", type=float, default=None)
    parser.add_argument("--probe-seconds", type=float, default=5.0)
    parser.add_argument("--drain-interval", type=int, default=5, help="seconds (DRAIN_INTERVAL_SECONDS; production default 5)")
    parser.add_argument("--workers", type=int, default=1, help="gateway worker processes")
    parser.add_argument("--retention-minutes", type=float, default=5.0,
                        help="DRAIN_RETENTION_HOURS for the run (production: 24 h), so trimming is exercised")
    parser.add_argument("--drain-loop", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.drain_loop is not None:
        drain_loop(args.drain_loop)
        return
    result = soak(args.minutes, args.fraction, args.threads, args.batch, args.sample_seconds,
                  args.probe_seconds, args.drain_interval, args.workers, args.retention_minutes)
    sys.exit(0 if report(result) else 1)


if __name__ == "__main__":
    main()
