"""Rate limits and revocation hold across gateway processes and workers that share one Redis."""

from __future__ import annotations

import itertools

import httpx

from ingest_platform.storage import api_keys
from ingest_platform_tests.gateway.conftest import EVENT, eventually, make_key, post, stream_entries


def test_rate_limit_is_shared_by_two_gateway_processes(gateways, redis_client):
    first, second = gateways(), gateways(workers=2)
    key = make_key(redis_client, rate_per_second=0.001, burst=10)  # no meaningful refill during the test
    statuses = [post(gw, key, EVENT).status_code for gw in itertools.islice(itertools.cycle([first, second]), 30)]
    assert statuses.count(202) == 10
    assert statuses.count(429) == 20
    assert statuses[:10] == [202] * 10  # the bucket drains in order, whichever process answers
    assert sum(len(e.events) for _, e in stream_entries(redis_client)) == 10


def test_revocation_reaches_every_worker(gateways, redis_client):
    gw = gateways(workers=2)
    key = make_key(redis_client)
    with httpx.Client() as one, httpx.Client() as other:  # two connections: likely two workers
        for client in (one, other):
            assert client.post(f"{gw.url}/v1/events", json=EVENT, headers={"Authorization": f"Bearer {key}"}).status_code == 202
        api_keys.revoke_key(redis_client, api_keys.split_key(key))

        def all_refuse():
            fresh = [httpx.post(f"{gw.url}/v1/events", json=EVENT, headers={"Authorization": f"Bearer {key}"})
                     for _ in range(6)]
            kept = [c.post(f"{gw.url}/v1/events", json=EVENT, headers={"Authorization": f"Bearer {key}"})
                    for c in (one, other)]
            return all(r.status_code == 401 for r in fresh + kept)

        assert eventually(all_refuse, timeout=5)


def test_metrics_aggregate_across_workers(gateways, redis_client):
    gw = gateways(workers=2)
    key = make_key(redis_client)
    for _ in range(8):
        assert post(gw, key, EVENT).status_code == 202
    text = httpx.get(f"{gw.url}/metrics").text
    line = next(l for l in text.splitlines()
                if l.startswith("gateway_events_total") and 'event_type="user_interaction"' in l and "accepted" in l)
    assert float(line.rsplit(" ", 1)[1]) == 8.0
