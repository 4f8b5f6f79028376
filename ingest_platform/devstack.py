"""`ingest-platform dev`: the whole local stack in the foreground, stopped as one by Ctrl-C.

Starts a private Redis (unless REDIS_URL is set), the gateway, the Dagster webserver and daemon and,
optionally, the traffic generator. Each child runs in its own session so that stopping it also
stops what it spawned (the Dagster daemon's code server, uvicorn's workers): no orphans.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from ingest_platform.settings import Settings
from ingest_platform.storage import api_keys, event_log
from ingest_platform.storage.redis_server import RedisServer
from ingest_platform.storage.warehouse import refresh_warehouse

console = Console(stderr=True)
DAGSTER_YAML = """\
# Written by `ingest-platform dev`: local instance storage (SQLite). For production, point
# storage at PostgreSQL (see the README's "Production Dagster" section).
telemetry:
  enabled: false
run_coordinator:
  module: dagster.core.run_coordinator
  class: DefaultRunCoordinator
"""


@dataclass
class Child:
    name: str
    process: subprocess.Popen

    def stop(self, sig: int) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                pass


@dataclass
class DevStack:
    settings: Settings
    gateway_port: int
    ui_port: int
    traffic: bool
    children: list[Child] = field(default_factory=list)
    redis: RedisServer | None = None

    def run(self) -> int:
        signal.signal(signal.SIGTERM, _interrupt)
        signal.signal(signal.SIGINT, _interrupt)  # also when started in the background, where SIGINT is ignored
        try:
            env = self._prepare()
            self._start_children(env)
            return self._watch()
        except KeyboardInterrupt:
            console.print("\n[bold]stopping[/bold] ...")
            return 0
        finally:
            self._stop_all()

    def _prepare(self) -> dict[str, str]:
        data = self.settings.data_dir
        data.mkdir(parents=True, exist_ok=True)
        redis_url = self.settings.redis_url
        if not redis_url:
            self.redis = RedisServer(directory=data / "redis").start()
            redis_url = self.redis.url
            console.print(f"redis     {redis_url}  (private, AOF in {data / 'redis'})")
        else:
            console.print(f"redis     {redis_url}  (REDIS_URL)")
        dagster_home = self.settings.dagster_home
        dagster_home.mkdir(parents=True, exist_ok=True)
        if not (dagster_home / "dagster.yaml").exists():
            (dagster_home / "dagster.yaml").write_text(DAGSTER_YAML)
        refresh_warehouse(self.settings.warehouse_path, self.settings.lake_dir)
        self.dev_key = dev_api_key(redis_url, data)
        env = dict(os.environ, REDIS_URL=redis_url, INGEST_DATA_DIR=str(data), DAGSTER_HOME=str(dagster_home))
        return env

    def _start_children(self, env: dict[str, str]) -> None:
        exe = [sys.executable, "-m"]
        module = ["-m", "ingest_platform.defs.definitions", "-a", "defs"]
        self._spawn("gateway", [*exe, "ingest_platform.cli", "gateway", "--port", str(self.gateway_port)], env)
        self._spawn("dagster-daemon", [*exe, "dagster._daemon", "run", *module], env)
        self._spawn("dagster-webserver", [*exe, "dagster_webserver", "-h", self.settings.dagster_ui_host,
                                          "-p", str(self.ui_port), *module], env)
        if self.traffic:
            self._spawn("traffic", [*exe, "ingest_platform.cli", "traffic", "--url",
                                    f"http://127.0.0.1:{self.gateway_port}", "--key", self.dev_key], env)
        console.print(f"gateway   http://{self.settings.gateway_host}:{self.gateway_port}  (docs at /docs)")
        console.print(f"dagster   http://{self.settings.dagster_ui_host}:{self.ui_port}")
        console.print(f"warehouse {self.settings.warehouse_path}  (ingest-platform sql \"...\")")
        console.print(f"traffic   {'on' if self.traffic else 'off (--no-traffic)'}")
        console.print("Ctrl-C stops everything. Dev API key (also in data/dev_api_key):")
        print(self.dev_key, flush=True)  # stdout holds only the key, for scripts

    def _spawn(self, name: str, command: list[str], env: dict[str, str]) -> None:
        log = open(self.settings.data_dir / f"{name}.log", "ab")
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.children.append(Child(name, process))

    def _watch(self) -> int:
        while True:
            for child in self.children:
                code = child.process.poll()
                if code is not None:
                    log = self.settings.data_dir / f"{child.name}.log"
                    console.print(f"[red]{child.name} exited with {code}[/red]; see {log}. Stopping the stack.")
                    return 1
            time.sleep(0.5)

    def _stop_all(self) -> None:
        for child in self.children:
            child.stop(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for child in self.children:
            try:
                child.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.stop(signal.SIGKILL)
                child.process.wait()
            child.stop(signal.SIGKILL)  # whatever it spawned and left in its session
        if self.redis is not None:
            self.redis.stop()
        console.print("stopped.")


def _interrupt(*_) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the stack exactly like Ctrl-C


def dev_api_key(redis_url: str, data_dir: Path) -> str:
    """The dev key from data/dev_api_key if Redis still knows it, else a new one."""
    path = data_dir / "dev_api_key"
    client = event_log.connect(redis_url)
    try:
        if path.exists():
            key = path.read_text().strip()
            key_id = api_keys.split_key(key)
            record = api_keys.get_record(client.hget(api_keys.KEYS_HASH, key_id)) if key_id else None
            if api_keys.verify(record, key):
                return key
        key, _ = api_keys.create_key(client, "dev")
    finally:
        client.close()
    path.write_text(key + "\n")
    path.chmod(0o600)
    return key
