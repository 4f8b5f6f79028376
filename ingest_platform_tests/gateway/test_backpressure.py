"""Backpressure and Redis outages: 503 + Retry-After, and recovery without a restart."""

from __future__ import annotations

import os
import signal
import time
import uuid
from datetime import datetime, timezone

import httpx
import redis

from ingest_platform.contract import DEAD_LETTER_DATASET
from ingest_platform.drain.micro_batch import drain_all_streams
from ingest_platform.storage.event_log import DrainLog
from ingest_platform_tests.drain.helpers import landed_ids
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


def _event(event_id: str | None = None) -> dict:
    """An interaction stamped now (so the drain lands it as a valid row), with `event_id` if given."""
    fields = {**EVENT["user_interaction"], "timestamp": datetime.now(timezone.utc).isoformat()}
    if event_id is not None:
        fields["event_id"] = event_id
    return {"user_interaction": fields}


def _timed_post(gw, key, body) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = post(gw, key, body, timeout=30)
    return response, time.monotonic() - started


def test_frozen_redis_answers_outcome_unknown_with_the_ids_and_a_retry_with_them_lands_once(own_redis, tmp_path):
    """Redis stopped by SIGSTOP: the connection stays open and the write is sent, but no answer comes.
    Before: 10.2 s to a 503 that said "nothing was written", and the event appeared in the stream once
    Redis resumed. Now: 1-1.25x GATEWAY_REDIS_TIMEOUT_SECONDS (1 s here) to 503 `outcome_unknown` listing
    the ids to retry with; later requests 503 at once; a retry with the ids lands exactly once."""
    client = redis.Redis.from_url(own_redis.url)
    gw = start_gateway(own_redis.url, tmp_path, gateway_redis_timeout_seconds=1)
    lake = tmp_path / "lake"
    events = [_event(), _event("client-chosen-1")]
    body = {"events": [*events, {"user_interaction": {"user_id": 1}}]}
    try:
        key = make_key(client)
        assert _status(gw, key) == 202  # the key is in the worker's cache, the connections are open
        os.kill(own_redis.process.pid, signal.SIGSTOP)
        try:
            frozen, took = _timed_post(gw, key, body)
            assert frozen.status_code == 503, frozen.text
            error = frozen.json()["error"]
            assert error["code"] == "outcome_unknown" and frozen.headers["retry-after"] == "1"
            assert took < 4, took  # 1 s timeout (+ the watchdog's quarter); was 10.2 s
            results = error["results"]
            assert [(r["index"], r["status"]) for r in results] == [(0, "unknown"), (1, "unknown"), (2, "rejected")]
            generated = results[0]["event_id"]
            assert uuid.UUID(generated).version == 7  # the gateway's id, to be reused by the retry
            assert results[1]["event_id"] == "client-chosen-1"  # the client's own id is kept

            # Known unreachable now: answered at once, no round trip to wait on, even with the key's
            # cache entry past its second (the stale record is used: nothing can be revoked meanwhile).
            time.sleep(1.2)
            fast, took = _timed_post(gw, key, _event())
            assert fast.status_code == 503 and fast.json()["error"]["code"] == "buffer_unavailable", fast.text
            assert took < 0.9, took  # less than one Redis timeout
            ready = httpx.get(f"{gw.url}/readyz", timeout=10)
            assert ready.status_code == 503 and ready.json()["reason"] == "buffer_unavailable"
        finally:
            os.kill(own_redis.process.pid, signal.SIGCONT)

        assert eventually(lambda: _status(gw, key) == 202, timeout=15)  # recovers by itself
        assert httpx.get(f"{gw.url}/readyz").status_code == 200
        # The retry the docs ask for: the same events, each with the listed event_id set (which
        # changes the raw JSON of the one whose id the gateway generated).
        resent = [{"user_interaction": {**event["user_interaction"], "event_id": result["event_id"]}}
                  for event, result in zip(events, results)]
        retried = post(gw, key, {"events": resent})
        assert retried.status_code == 202, retried.text
        assert [r["event_id"] for r in retried.json()["results"]] == [generated, "client-chosen-1"]

        drain_all_streams(DrainLog(client), lake, max_entries=1000)
        landed = landed_ids(lake)
        # whether or not the unanswered write ran when Redis woke, each event is in the lake once,
        # and a retry in the same drain batch as that write is a retry, not a reused id
        assert landed.count(generated) == 1 and landed.count("client-chosen-1") == 1, landed
        assert landed_ids(lake, DEAD_LETTER_DATASET) == []
    finally:
        gw.stop()
        client.close()


def test_frozen_redis_with_a_stale_key_fails_fast_from_the_first_request(own_redis, tmp_path):
    """The key's cache entry is past its second when Redis freezes: the key lookup waits one timeout,
    marks Redis unreachable and falls back to the cached record, and the write is then refused
    before it is sent: nothing written, so `buffer_unavailable`, after one timeout, not two."""
    client = redis.Redis.from_url(own_redis.url)
    gw = start_gateway(own_redis.url, tmp_path, gateway_redis_timeout_seconds=1)
    try:
        key = make_key(client)
        assert _status(gw, key) == 202
        time.sleep(1.2)  # the cached record is stale now
        os.kill(own_redis.process.pid, signal.SIGSTOP)
        try:
            refused, took = _timed_post(gw, key, _event("stale-key-1"))
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["code"] == "buffer_unavailable"
            assert took < 3, took  # one timeout for the key lookup (was 5 s + 5 s)
        finally:
            os.kill(own_redis.process.pid, signal.SIGCONT)
        assert eventually(lambda: _status(gw, key) == 202, timeout=15)
        assert not any(b"stale-key-1" in _entry for _entry in _stored(client))  # never sent
    finally:
        gw.stop()
        client.close()


def _stored(client: redis.Redis) -> list[bytes]:
    return [fields[b"entry"] for _, fields in client.xrange("ingest:events:user_interaction")]


def test_redis_refusing_connections_answers_nothing_written(own_redis, tmp_path):
    """Redis down (connections refused): nothing can have been sent, so the answer is the plain
    `buffer_unavailable` (nothing written), with no ids to retry with, and at once."""
    client = redis.Redis.from_url(own_redis.url)
    gw = start_gateway(own_redis.url, tmp_path)
    try:
        key = make_key(client)
        assert _status(gw, key) == 202
        own_redis.stop(kill=True)
        time.sleep(0.5)  # the health poll has seen it: every path answers without a round trip
        for _ in range(3):
            down, took = _timed_post(gw, key, _event("refused-1"))
            assert down.status_code == 503 and took < 0.9, (down.text, took)
            assert down.json()["error"]["code"] == "buffer_unavailable"
            assert "results" not in down.json()["error"]
        own_redis.start()
        assert eventually(lambda: _status(gw, key) == 202, timeout=15)
        assert not any(b"refused-1" in entry for entry in _stored(client))
    finally:
        gw.stop()
        client.close()
