"""Rate limits and revocation hold across gateway processes and workers that share one Redis."""

from __future__ import annotations

import itertools
import json
import os
import time

import httpx

from ingest_platform.storage import api_keys
from ingest_platform_tests.conftest import GatewayProcess
from ingest_platform_tests.gateway.conftest import EVENT, eventually, make_key, post, stream_entries


def test_rate_limit_is_shared_by_two_gateway_processes(gateways, redis_client):
    first, second = gateways(), gateways(workers=2)
    key = make_key(redis_client, rate_per_second=0.001, burst=10)  # no meaningful refill during the test
    statuses = [post(gw, key, EVENT).status_code for gw in itertools.islice(itertools.cycle([first, second]), 30)]
    assert statuses.count(202) == 10
    assert statuses.count(429) == 20
    assert statuses[:10] == [202] * 10  # the bucket drains in order, whichever process answers
    assert sum(len(e.events) for _, e in stream_entries(redis_client)) == 10


def _access_log(path) -> dict[str, tuple[int, int]]:
    """request id -> (pid of the worker that answered, status), from the gateway's JSON access log."""
    answered = {}
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("msg") == "POST /v1/events" and "request_id" in record:
            answered[record["request_id"]] = (record["pid"], record["status"])
    return answered


def test_revocation_reaches_every_worker_within_a_second(redis_server, redis_client, tmp_path):
    """Both workers of a 2-worker gateway hold the key in their one-second cache; requests go on
    over many connections (kept and new) through the revocation. Every request sent more than 1.2 s
    after the revocation is refused, and both workers are seen answering 202 before and 401 after
    (which worker answered is read from the access log's pid per request id)."""
    env = dict(os.environ, REDIS_URL=redis_server.url, INGEST_DATA_DIR=str(tmp_path / "data"),
               GATEWAY_ACCESS_LOG="true")
    log_path = tmp_path / "gateway.log"
    key = make_key(redis_client)
    headers = {"Authorization": f"Bearer {key}"}
    sent: list[tuple[str, float | None, int]] = []  # (request id, seconds after the revocation, status)
    numbers = itertools.count()

    def send(client, revoked_at: float | None) -> None:
        rid = f"rev-{next(numbers)}"
        at = None if revoked_at is None else time.monotonic() - revoked_at  # taken before sending
        response = client.post(f"{gw.url}/v1/events", json=EVENT, headers={**headers, "X-Request-ID": rid})
        sent.append((rid, at, response.status_code))

    with open(log_path, "wb") as output:
        gw = GatewayProcess(env, workers=2, output=output)
        kept: list[httpx.Client] = []
        try:
            # Warm: connections until both workers have answered one (each connection stays with the
            # worker that accepted it); each answer puts the key in that worker's cache.
            while len(kept) < 64:
                kept.append(httpx.Client(timeout=10))
                send(kept[-1], None)
                assert sent[-1][2] == 202
                if len(kept) >= 8 and eventually(lambda: len(_access_log(log_path)) == len(sent), timeout=5) \
                        and len({pid for pid, _ in _access_log(log_path).values()}) == 2:
                    break
            workers = {pid for pid, _ in _access_log(log_path).values()}
            assert len(workers) == 2, f"64 connections all went to one worker: {workers}"
            for client in kept:  # both caches fresh right up to the revocation
                send(client, None)

            api_keys.revoke_key(redis_client, api_keys.split_key(key))
            revoked_at = time.monotonic()  # the revocation is stored in Redis by now
            while time.monotonic() - revoked_at < 2.5:
                for i, client in enumerate(kept):
                    send(client, revoked_at)
                    if i % 4 == 0:
                        with httpx.Client(timeout=10) as fresh:  # a new connection, to either worker
                            send(fresh, revoked_at)
            assert eventually(lambda: len(_access_log(log_path)) == len(sent), timeout=10)
        finally:
            for client in kept:
                client.close()
            gw.stop()

    answered = _access_log(log_path)
    assert all(answered[rid][1] == status for rid, _, status in sent)  # the log and the client agree
    before = {answered[rid][0] for rid, at, status in sent if at is None and status == 202}
    late = [(rid, at, status) for rid, at, status in sent if at is not None and at > 1.2]
    refusing = {answered[rid][0] for rid, _, status in late if status == 401}
    last_202 = max((at for _, at, status in sent if at is not None and status == 202), default=0.0)
    assert before == workers, "both workers held the key in their cache when it was revoked"
    assert late and all(status == 401 for _, _, status in late), \
        f"a request sent over 1.2 s after the revocation was not refused; the last 202 was sent at {last_202:.3f} s"
    assert refusing == workers, "both workers refused the revoked key"
    assert last_202 <= 1.2


def test_metrics_aggregate_across_workers(gateways, redis_client):
    gw = gateways(workers=2)
    key = make_key(redis_client)
    for _ in range(8):
        assert post(gw, key, EVENT).status_code == 202
    text = httpx.get(f"{gw.url}/metrics").text
    line = next(l for l in text.splitlines()
                if l.startswith("gateway_events_total") and 'event_type="user_interaction"' in l and "accepted" in l)
    assert float(line.rsplit(" ", 1)[1]) == 8.0
