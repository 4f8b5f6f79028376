"""Startup checks of a gateway worker, in process (the lifespan's start/stop)."""

from __future__ import annotations

import asyncio
import logging

import redis

from ingest_platform.gateway.logs import log
from ingest_platform.gateway.state import Gateway
from ingest_platform.settings import Settings


class _Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


def _start_and_stop(url: str) -> list[logging.LogRecord]:
    handler = _Records()
    log.addHandler(handler)
    try:
        async def run():
            gateway = Gateway(Settings(redis_url=url))
            await gateway.start()
            await gateway.stop()

        asyncio.run(run())
    finally:
        log.removeHandler(handler)
    return handler.records


def test_warns_when_redis_may_evict_undrained_events(own_redis):
    client = redis.Redis.from_url(own_redis.url)
    assert not [r for r in _start_and_stop(own_redis.url) if "noeviction" in r.getMessage()]
    client.config_set("maxmemory-policy", "allkeys-lru")
    warnings = [r for r in _start_and_stop(own_redis.url) if "noeviction" in r.getMessage()]
    assert warnings and warnings[0].levelno == logging.WARNING
    assert warnings[0].maxmemory_policy == "allkeys-lru"
    client.close()
