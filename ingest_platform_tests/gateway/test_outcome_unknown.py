"""What a 503 `outcome_unknown` tells besides its body (test_backpressure.py covers the body, the
timing and the retry): its shape is the documented one, and the metrics count it honestly."""

from __future__ import annotations

import os
import signal

import httpx
import redis

from ingest_platform_tests.gateway.conftest import EVENT, assert_documented, make_key, metric, post, start_gateway


def test_an_unknown_outcome_is_documented_and_counted_neither_accepted_nor_lost(own_redis, tmp_path):
    """Redis frozen (SIGSTOP) mid-session: the batch's rejections are counted as in any answer, its
    sent events under outcome "unknown" (they may or may not be stored), none as accepted."""
    client = redis.Redis.from_url(own_redis.url)
    gw = start_gateway(own_redis.url, tmp_path, gateway_redis_timeout_seconds=1)
    wrong_type = {"user_interaction": {**EVENT["user_interaction"], "user_id": 1}}
    try:
        key = make_key(client)
        assert post(gw, key, EVENT).status_code == 202  # the key is cached, the connections open
        before = httpx.get(f"{gw.url}/metrics").text
        os.kill(own_redis.process.pid, signal.SIGSTOP)
        try:
            frozen = post(gw, key, {"events": [EVENT, EVENT, wrong_type]}, timeout=30)
            after = httpx.get(f"{gw.url}/metrics").text  # /metrics needs no Redis
            assert frozen.status_code == 503 and frozen.json()["error"]["code"] == "outcome_unknown", frozen.text
            assert_documented(gw, frozen)  # results included
        finally:
            os.kill(own_redis.process.pid, signal.SIGCONT)
    finally:
        gw.stop()
        client.close()

    def added(outcome: str, reason: str = "") -> float:
        labels = {"event_type": "user_interaction", "outcome": outcome, "reason": reason}
        return metric(after, "gateway_events_total", **labels) - metric(before, "gateway_events_total", **labels)

    assert added("unknown") == 2
    assert added("rejected", "invalid_field") == 1
    assert added("accepted") == 0
    assert (metric(after, "gateway_requests_total", route="/v1/events", status="503")
            - metric(before, "gateway_requests_total", route="/v1/events", status="503")) == 1
