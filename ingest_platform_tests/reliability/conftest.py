"""Reliability fixtures: a gateway process (logs kept) on the session's Redis, and a key for it."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from ingest_platform.storage.redis_server import RedisServer
from ingest_platform_tests.reliability.support import LoggedGateway, make_key


@dataclass
class Stack:
    redis: RedisServer
    gateway: LoggedGateway
    key: str  # a key with every scope and a rate limit that fuzzing never reaches


@pytest.fixture(scope="module")
def module_stack(tmp_path_factory):
    """A Redis and a gateway of this module's own (never flushed by other tests' fixtures)."""
    root = tmp_path_factory.mktemp("stack")
    server = RedisServer(directory=root / "redis").start()
    (root / "data").mkdir()
    gateway = None
    try:
        gateway = LoggedGateway(server.url, root / "data", root / "gateway.log",
                                gateway_body_timeout_seconds=2, gateway_header_timeout_seconds=2)
        yield Stack(server, gateway, make_key(server.url, rate_per_second=1e9, burst=10**9))
    finally:
        if gateway:
            gateway.stop()
        server.stop(kill=True)


@pytest.fixture
def logged_gateway(redis_server, tmp_path):
    """start(**settings) -> a gateway process whose JSON logs are in `.logs()`; stopped after the test."""
    started = []

    def start(workers: int = 1, **settings) -> LoggedGateway:
        data = tmp_path / f"data{len(started)}"
        data.mkdir()
        gateway = LoggedGateway(redis_server.url, data, tmp_path / f"gateway{len(started)}.log", workers, **settings)
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.stop()


@pytest.fixture
def unlimited_key(redis_server) -> str:
    """A key whose rate limit never gets in the fuzzer's way."""
    return make_key(redis_server.url, rate_per_second=1e9, burst=10**9)
