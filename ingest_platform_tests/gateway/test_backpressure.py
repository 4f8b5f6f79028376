"""Backpressure and Redis outages: 503 + Retry-After, and recovery without a restart."""

from __future__ import annotations

import httpx
import redis

from ingest_platform.drain.micro_batch import drain_all_streams
from ingest_platform.storage.event_log import DrainLog
from ingest_platform_tests.gateway.conftest import EVENT, eventually, make_key, post, start_gateway


def _status(gw, key):
    return post(gw, key, EVENT).status_code


def test_backlog_over_high_water_mark_turns_503_until_drained(own_redis, tmp_path):
    client = redis.Redis.from_url(own_redis.url)
    gw = start_gateway(own_redis.url, tmp_path, gateway_backlog_high_water=3)
    try:
        key = make_key(client)
        statuses = [_status(gw, key) for _ in range(3)]
        assert statuses == [202] * 3
        # the backlog is polled in the background: a request or two may pass before the flag flips
        assert eventually(lambda: statuses.append(_status(gw, key)) or statuses[-1] == 503)
        refused = post(gw, key, EVENT)
        assert refused.json()["error"]["code"] == "backlog_full"
        assert int(refused.headers["retry-after"]) >= 1
        ready = httpx.get(f"{gw.url}/readyz")
        assert ready.status_code == 503 and ready.json()["reason"] == "backlog_full"
        # nothing trimmed, nothing lost: every 202 is in the stream
        assert client.xlen("ingest:events:user_interaction") == statuses.count(202)

        drain_all_streams(DrainLog(client), tmp_path / "lake", max_entries=100)
        assert eventually(lambda: _status(gw, key) == 202)
        assert httpx.get(f"{gw.url}/readyz").status_code == 200
    finally:
        gw.stop()
        client.close()


def test_redis_memory_near_its_limit_turns_503_until_it_has_room(own_redis, tmp_path):
    client = redis.Redis.from_url(own_redis.url)
    gw = start_gateway(own_redis.url, tmp_path, gateway_memory_high_water=0.9)
    try:
        key = make_key(client)
        assert _status(gw, key) == 202
        used = int(client.info("memory")["used_memory"])
        client.config_set("maxmemory", str(int(used * 1.05)))  # over 90% of the limit
        assert eventually(lambda: _status(gw, key) == 503)
        assert post(gw, key, EVENT).json()["error"]["code"] == "buffer_memory_full"
        client.config_set("maxmemory", "0")
        assert eventually(lambda: _status(gw, key) == 202)
    finally:
        gw.stop()
        client.close()


def test_redis_down_answers_503_fast_and_recovers_by_itself(own_redis, tmp_path):
    client = redis.Redis.from_url(own_redis.url)
    gw = start_gateway(own_redis.url, tmp_path)
    try:
        key = make_key(client)
        assert _status(gw, key) == 202
        own_redis.stop(kill=True)
        down = post(gw, key, EVENT)
        assert down.status_code == 503
        assert down.json()["error"]["code"] == "buffer_unavailable" and down.headers["retry-after"] == "1"
        ready = httpx.get(f"{gw.url}/readyz")
        assert ready.status_code == 503 and ready.json()["reason"] == "buffer_unavailable"

        own_redis.start()
        assert eventually(lambda: _status(gw, key) == 202, timeout=15)
        assert httpx.get(f"{gw.url}/readyz").status_code == 200
        # the acknowledged events before and after the outage are all in the stream
        assert client.xlen("ingest:events:user_interaction") >= 2
    finally:
        gw.stop()
        client.close()


def test_redis_down_for_a_key_not_seen_before_answers_503_not_500(own_redis, tmp_path):
    """Regression (found by the chaos run): the key lookup itself hit the dead Redis and gave 500."""
    client = redis.Redis.from_url(own_redis.url)
    gw = start_gateway(own_redis.url, tmp_path)
    try:
        key = make_key(client)  # created, but never used: not in any worker's cache
        own_redis.stop(kill=True)
        down = post(gw, key, EVENT)
        assert down.status_code == 503, down.text
        assert down.json()["error"]["code"] == "buffer_unavailable" and down.headers["retry-after"] == "1"
        own_redis.start()
        assert eventually(lambda: _status(gw, key) == 202, timeout=15)
    finally:
        gw.stop()
        client.close()
