"""Fixtures: a private Redis server per test session (and one per test that kills it), a data
dir per test, the gateway as a real subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import redis

from ingest_platform.settings import get_settings
from ingest_platform.storage import api_keys
from ingest_platform.storage.redis_server import RedisServer, free_port


@pytest.fixture(scope="session")
def shared_redis(tmp_path_factory) -> RedisServer:
    server = RedisServer(directory=tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_server(shared_redis: RedisServer) -> RedisServer:
    """The session's server, emptied for this test."""
    redis.Redis.from_url(shared_redis.url).flushall()
    return shared_redis


@pytest.fixture
def own_redis(tmp_path) -> RedisServer:
    """A server of this test's own, which the test may kill and restart.

    `appendfsync always`: these tests assert that acknowledged events survive `kill -9`, which
    `everysec` does not promise while a busy disk makes Redis postpone its AOF write (docs/guarantees.md).
    """
    server = RedisServer(directory=tmp_path / "redis", appendfsync="always").start()
    yield server
    server.stop(kill=True)


@pytest.fixture
def platform_env(redis_server: RedisServer, tmp_path: Path, monkeypatch) -> Path:
    """Points the platform (settings read from the environment) at the test's Redis and data dir."""
    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    monkeypatch.setenv("INGEST_DATA_DIR", str(data))
    get_settings.cache_clear()
    yield data
    get_settings.cache_clear()


@pytest.fixture
def redis_client(redis_server: RedisServer) -> redis.Redis:
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


@pytest.fixture
def api_key(redis_client) -> str:
    key, _ = api_keys.create_key(redis_client, "test")
    return key


class GatewayProcess:
    """`ingest-platform gateway` as a real process (its output to `output`, default inherited)."""

    def __init__(self, env: dict[str, str], workers: int = 1, output=None, ready_timeout: float = 20):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/v1/events/ws"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ingest_platform.cli", "gateway", "--port", str(self.port),
             "--workers", str(workers)],
            env=env, stdout=output, stderr=subprocess.STDOUT if output else None, start_new_session=True,
        )
        self.wait_ready(ready_timeout)

    def wait_ready(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.process.returncode}: {self.exit_details()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError("gateway not ready")

    def exit_details(self) -> str:
        return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


@pytest.fixture
def gateway(platform_env: Path) -> GatewayProcess:
    """The gateway as a real process, talking to the test's Redis."""
    process = GatewayProcess(dict(os.environ))
    yield process
    process.stop()
