"""Chaos run: real processes, real faults, and a ledger of every acknowledged event.

A gateway (several uvicorn workers), a Redis server with AOF, and the Dagster daemon running the
drain sensor, all as real processes. Load generators send valid and invalid events over HTTP and
over WebSocket with client-chosen event ids and retry every failure with the same ids (a WebSocket
client reconnects and resends every message whose ack it has not seen). Meanwhile faults strike at
random moments: kill -9 of a gateway worker, kill -9 of the Dagster daemon with its code server
(the process doing the drain), and kill -9 of Redis followed by a restart from its AOF. Afterwards
every event that got a 2xx must be exactly once in the lake, as a valid row or as a dead letter.

On demand: `python -m ingest_platform_tests.reliability.chaos --seconds 600`.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import httpx
import msgspec
import psutil
import redis
from websockets.exceptions import WebSocketException
from websockets.sync.client import connect as ws_connect

from ingest_platform.contract import DEAD_LETTER_DATASET, EVENT_TYPES
from ingest_platform.devstack import DAGSTER_YAML
from ingest_platform.storage import api_keys
from ingest_platform.storage.event_log import DrainLog
from ingest_platform.storage.lake import dataset_glob
from ingest_platform.storage.redis_server import RedisServer, free_port

INVALID_RATIO = 0.05


@dataclass
class Ledger:
    acked_valid: set[str] = field(default_factory=set)
    acked_invalid: set[str] = field(default_factory=set)
    attempts: int = 0
    failures: Counter = field(default_factory=Counter)
    by_channel: Counter = field(default_factory=Counter)  # acknowledged events per protocol
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, valid: set[str], invalid: set[str], channel: str) -> None:
        with self.lock:
            self.acked_valid |= valid
            self.acked_invalid |= invalid
            self.by_channel[channel] += len(valid) + len(invalid)


@dataclass
class ChaosStack:
    root: Path
    gateway_workers: int = 2
    env: dict[str, str] = field(default_factory=dict)
    redis: RedisServer | None = None
    gateway: subprocess.Popen | None = None
    daemon: subprocess.Popen | None = None
    gateway_port: int = field(default_factory=free_port)

    def start(self) -> str:
        data = self.root / "data"
        (data / "dagster_home").mkdir(parents=True, exist_ok=True)
        (data / "dagster_home" / "dagster.yaml").write_text(DAGSTER_YAML)
        # appendfsync always: an entry is on disk before Redis replies, so even kill -9 of Redis loses
        # nothing the gateway acknowledged (with everysec the window is up to one second; README).
        self.redis = RedisServer(directory=self.root / "redis", appendfsync="always").start()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("ENABLE_", "DRAIN_"))}
        self.env.update(REDIS_URL=self.redis.url, INGEST_DATA_DIR=str(data),
                        DAGSTER_HOME=str(data / "dagster_home"), DRAIN_INTERVAL_SECONDS="5")
        client = redis.Redis.from_url(self.redis.url)
        key, _ = api_keys.create_key(client, "chaos")
        client.close()
        self.start_gateway()
        self.start_daemon()
        return key

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    def start_gateway(self) -> None:
        self.gateway = self._spawn(["ingest_platform.cli", "gateway", "--port", str(self.gateway_port),
                                    "--workers", str(self.gateway_workers)], "gateway.log")

    def start_daemon(self) -> None:
        self.daemon = self._spawn(["dagster._daemon", "run", "-m", "ingest_platform.defs.definitions",
                                   "-a", "defs"], "daemon.log")

    def _spawn(self, args: list[str], log: str) -> subprocess.Popen:
        out = open(self.root / log, "ab")
        return subprocess.Popen([sys.executable, "-m", *args], env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)

    # --- faults -----------------------------------------------------------------------------
    def kill_gateway_worker(self) -> str:
        workers = psutil.Process(self.gateway.pid).children()
        if not workers:
            return "gateway: no worker to kill"
        victim = random.choice(workers)
        victim.kill()
        return f"kill -9 gateway worker {victim.pid} (the supervisor starts a new one)"

    def kill_daemon(self) -> str:
        os.killpg(self.daemon.pid, signal.SIGKILL)
        self.daemon.wait()
        time.sleep(random.uniform(0.5, 3))
        self.start_daemon()
        return "kill -9 dagster daemon + code server (the drain), restarted"

    def kill_redis(self) -> str:
        self.redis.stop(kill=True)
        time.sleep(random.uniform(0.5, 2))
        self.redis.start()
        return "kill -9 redis, restarted from its AOF"

    def stop(self) -> None:
        for process in (self.gateway, self.daemon):
            if process is not None and process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
        if self.redis is not None:
            self.redis.stop()


def _event(valid: bool) -> tuple[str, dict]:
    event_id = str(uuid.uuid4())
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if random.random() < 0.2:
        rating = random.choice([1.0, 3.0, 5.0]) if valid else 9.0
        body = {"feedback_event": {"event_id": event_id, "user_id": "u1", "recommendation_id": "r1",
                                   "feedback_type": "explicit", "rating": rating, "timestamp": now}}
    else:
        action = random.choice(["play", "skip", "like"]) if valid else "EXPLODE"
        body = {"user_interaction": {"event_id": event_id, "user_id": f"u{random.randrange(50)}", "session_id": "s",
                                     "track_id": f"t{random.randrange(500)}", "action": action, "timestamp": now}}
    return event_id, body


def load_generator(url: str, key: str, ledger: Ledger, stop: threading.Event, batch_size: int = 20) -> None:
    """Send batches until `stop`; retry each batch (same event ids) until it is acknowledged."""
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=5) as client:
        while not stop.is_set():
            kinds = [random.random() >= INVALID_RATIO for _ in range(batch_size)]
            events = [_event(valid) for valid in kinds]
            payload = {"events": [body for _, body in events]}
            give_up = time.monotonic() + 120
            while time.monotonic() < give_up:
                ledger.attempts += 1
                try:
                    response = client.post("/v1/events", json=payload)
                except httpx.TransportError as exc:
                    ledger.failures[type(exc).__name__] += 1
                    time.sleep(0.2)
                    continue
                if response.status_code == 202:
                    results = response.json()["results"]
                    accepted = {events[r["index"]][0]: kinds[r["index"]] for r in results if r["status"] == "accepted"}
                    ledger.record({e for e, ok in accepted.items() if ok}, {e for e, ok in accepted.items() if not ok},
                                  "http")
                    break
                ledger.failures[f"http {response.status_code}"] += 1
                time.sleep(float(response.headers.get("retry-after", 0.2)))


def websocket_load_generator(url: str, key: str, ledger: Ledger, stop: threading.Event,
                             batch_size: int = 20) -> None:
    """Send batches over a WebSocket until `stop`; a batch whose ack did not arrive is resent (same
    event ids) on a new connection, so only acknowledged events are recorded."""
    ws_url = url.replace("http://", "ws://") + "/v1/events/ws"
    while not stop.is_set():
        kinds = [random.random() >= INVALID_RATIO for _ in range(batch_size)]
        events = [_event(valid) for valid in kinds]
        message = msgspec.json.encode({"events": [body for _, body in events]})
        give_up = time.monotonic() + 120
        while time.monotonic() < give_up:
            ledger.attempts += 1
            try:
                with ws_connect(ws_url, additional_headers={"Authorization": f"Bearer {key}"},
                                open_timeout=5, close_timeout=1) as ws:
                    ws.send(message)
                    while (reply := msgspec.json.decode(ws.recv(timeout=30)))["type"] == "wait":
                        pass  # the server holds the message until it is durable
                if reply["type"] != "ack":
                    ledger.failures[f"ws {reply['type']}"] += 1
                    continue
                accepted = {events[r["index"]][0]: kinds[r["index"]] for r in reply["results"]
                            if r["status"] == "accepted"}
                ledger.record({e for e, ok in accepted.items() if ok}, {e for e, ok in accepted.items() if not ok},
                              "websocket")
                break
            except (WebSocketException, OSError, TimeoutError) as exc:
                ledger.failures[f"ws {type(exc).__name__}"] += 1
                time.sleep(0.2)


def wait_until_drained(redis_url: str, timeout: float) -> None:
    log = DrainLog(redis.Redis.from_url(redis_url))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if all(log.lag(t.stream)[0] == 0 for t in EVENT_TYPES.values()):
                return
        except redis.ConnectionError:
            pass
        time.sleep(1)
    raise AssertionError(f"streams not drained within {timeout}s")


def landed_counts(lake: Path) -> tuple[Counter, Counter]:
    """(valid rows per event_id, dead letters per event_id) as found in the lake."""
    con = duckdb.connect()
    valid: Counter = Counter()
    for event_type in EVENT_TYPES.values():
        if list((lake / event_type.dataset).glob("**/*.parquet")):
            valid.update(dict(con.execute(
                "SELECT event_id, count(*) FROM read_parquet(?) GROUP BY 1",
                [dataset_glob(lake, event_type.dataset)]).fetchall()))
    dead: Counter = Counter()
    if list((lake / DEAD_LETTER_DATASET).glob("**/*.parquet")):
        dead.update(dict(con.execute("SELECT event_id, count(*) FROM read_parquet(?) GROUP BY 1",
                                     [dataset_glob(lake, DEAD_LETTER_DATASET)]).fetchall()))
    return valid, dead


def reconcile(ledger: Ledger, valid: Counter, dead: Counter) -> dict[str, int]:
    acked = ledger.acked_valid | ledger.acked_invalid
    landed = set(valid) | set(dead)
    return {
        "acknowledged": len(acked),
        "acknowledged_over_http": ledger.by_channel["http"],
        "acknowledged_over_websocket": ledger.by_channel["websocket"],
        "acknowledged_valid": len(ledger.acked_valid),
        "acknowledged_invalid": len(ledger.acked_invalid),
        "landed_valid_rows": sum(valid.values()),
        "landed_dead_letters": sum(dead.values()),
        "missing": len(acked - landed),
        "duplicated": sum(1 for e in landed if valid[e] + dead[e] > 1),
        "unacknowledged_but_landed": len(landed - acked),
        "valid_in_dead_letters": len(ledger.acked_valid & set(dead)),
        "invalid_in_valid_rows": len(ledger.acked_invalid & set(valid)),
    }


def run_chaos(root: Path, seconds: float, seed: int, generators: int = 3, out=print) -> dict[str, int]:
    random.seed(seed)
    stack = ChaosStack(root)
    ledger = Ledger()
    stop = threading.Event()
    try:
        key = stack.start()
        _wait_http(f"{stack.url}/healthz", 30)
        threads = [threading.Thread(target=load_generator, args=(stack.url, key, ledger, stop), daemon=True)
                   for _ in range(generators)]
        threads.append(threading.Thread(target=websocket_load_generator, args=(stack.url, key, ledger, stop),
                                        daemon=True))
        for thread in threads:
            thread.start()
        faults = [stack.kill_gateway_worker, stack.kill_daemon, stack.kill_redis]
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            time.sleep(random.uniform(seconds / 12, seconds / 5))
            out(f"[{time.monotonic() - started:5.1f}s] {random.choice(faults)()}")
        stop.set()
        for thread in threads:
            thread.join(150)
        wait_until_drained(stack.redis.url, 120)
        valid, dead = landed_counts(root / "data" / "lake")
    finally:
        stop.set()
        stack.stop()
    summary = reconcile(ledger, valid, dead)
    out(f"attempts {ledger.attempts}, failed attempts (retried) {dict(ledger.failures)}")
    out("ledger: " + ", ".join(f"{k}={v}" for k, v in summary.items()))
    return summary


def _wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError(f"{url} not up after {timeout}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    import tempfile

    root = args.dir or Path(tempfile.mkdtemp(prefix="chaos-"))
    print(f"chaos run: {args.seconds}s, seed {args.seed}, in {root}")
    summary = run_chaos(root, args.seconds, args.seed)
    bad = {k: summary[k] for k in ("missing", "duplicated", "unacknowledged_but_landed",
                                   "valid_in_dead_letters", "invalid_in_valid_rows") if summary[k]}
    print("PASS: every acknowledged event landed exactly once" if not bad else f"FAIL: {bad}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
