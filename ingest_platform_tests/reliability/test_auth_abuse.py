"""Authentication under attack: revoked, expired and wrong-scope keys, unknown ids answered like
wrong secrets, brute force slowed down, and keys never logged, never stored, never in HTTP URLs."""

from __future__ import annotations

import asyncio
import hmac
import json
import time

import httpx
import psutil
import redis
import redis.asyncio as aioredis
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from ingest_platform.gateway.auth import AuthError, Authenticator
from ingest_platform.settings import Settings
from ingest_platform.storage import api_keys
from ingest_platform_tests.reliability.support import REQUEST_TIMEOUT, VALID_INTERACTION, bearer, make_key

FEEDBACK = {"feedback_event": {"user_id": "u1", "recommendation_id": "r1", "feedback_type": "explicit",
                               "rating": 4.5, "timestamp": "2026-11-26T10:00:00Z"}}


def post(gateway, headers: dict, body=VALID_INTERACTION, path: str = "/v1/events") -> httpx.Response:
    return httpx.post(f"{gateway.url}{path}", json=body, headers=headers, timeout=REQUEST_TIMEOUT)


def secret_of(key: str) -> str:
    return key.split("_", 2)[2]


def ws_close_reason(gateway, **kwargs) -> tuple[int, str]:
    try:
        with connect(gateway.ws_url, open_timeout=REQUEST_TIMEOUT, **kwargs) as ws:
            ws.send(json.dumps(VALID_INTERACTION))
            ws.recv(timeout=REQUEST_TIMEOUT)
    except ConnectionClosed as closed:
        return closed.rcvd.code, closed.rcvd.reason
    raise AssertionError("the socket stayed open")


def test_revoked_expired_and_wrong_scope_keys_are_refused(module_stack):
    url, gateway = module_stack.redis.url, module_stack.gateway
    revoked = make_key(url)
    client = redis.Redis.from_url(url)
    api_keys.revoke_key(client, api_keys.split_key(revoked))
    client.close()
    expired = make_key(url, expires_in_seconds=0.001)
    interactions_only = make_key(url, scopes=["user_interaction"])
    features_only = make_key(url, scopes=["features:read"])
    time.sleep(1.1)  # past the auth cache and the expiry

    for key, code in ((revoked, "api_key_revoked"), (expired, "api_key_expired")):
        response = post(gateway, bearer(key))
        assert (response.status_code, response.json()["error"]["code"]) == (401, code)
        assert response.headers["www-authenticate"] == "Bearer"
        assert ws_close_reason(gateway, additional_headers=bearer(key)) == (1008, code)

    response = post(gateway, bearer(interactions_only), FEEDBACK)
    assert response.status_code == 403 and response.json()["results"][0]["code"] == "forbidden_event_type"
    response = post(gateway, bearer(interactions_only), {"events": [VALID_INTERACTION, FEEDBACK]})
    assert response.status_code == 202 and [r["status"] for r in response.json()["results"]] == ["accepted", "rejected"]
    response = post(gateway, bearer(features_only), VALID_INTERACTION)
    assert response.status_code == 403


def _comparable(response: httpx.Response) -> tuple:
    headers = tuple(sorted((k, v) for k, v in response.headers.items() if k not in ("date", "x-request-id")))
    return response.status_code, headers, response.content


def test_unknown_key_id_and_wrong_secret_get_identical_answers(module_stack):
    key = module_stack.key
    key_id = api_keys.split_key(key)
    wrong_secret = f"ik_{key_id}_{'A' * len(secret_of(key))}"
    unknown_id = f"ik_{'0' * len(key_id)}_{secret_of(key)}"
    answers = {_comparable(post(module_stack.gateway, bearer(k))) for k in (wrong_secret, unknown_id)}
    assert len(answers) == 1, answers
    status, _, body = answers.pop()
    assert status == 401 and json.loads(body)["error"]["code"] == "invalid_api_key"


def test_secrets_are_compared_in_constant_time_for_unknown_ids_too(redis_server, monkeypatch):
    """Behaviour, not timing: the constant-time comparison runs whether or not the id exists, so an
    attacker cannot tell ids apart by how fast the answer comes."""
    known = make_key(redis_server.url)
    compared = []
    real = hmac.compare_digest

    def counting(a, b):
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(api_keys.hmac, "compare_digest", counting)

    async def attempt(key: str) -> str:
        client = aioredis.Redis.from_url(redis_server.url)
        try:
            await Authenticator(client).authenticate(key)
            return "ok"
        except AuthError as exc:
            return exc.code
        finally:
            await client.aclose()

    unknown = f"ik_{'0' * 12}_{secret_of(known)}"
    wrong = f"ik_{api_keys.split_key(known)}_{'A' * 43}"
    assert [asyncio.run(attempt(k)) for k in (unknown, wrong, known)] == ["invalid_api_key"] * 2 + ["ok"]
    assert len(compared) == 3  # one comparison per attempt, known id or not
    assert all(len(a) == len(b) == 64 for a, b in compared)  # always hash against hash


def test_brute_force_from_one_client_is_slowed_down(logged_gateway, redis_server):
    gateway = logged_gateway(gateway_auth_failure_limit=10, gateway_auth_failure_window_seconds=2)
    good = make_key(redis_server.url)
    statuses = []
    with httpx.Client(base_url=gateway.url, timeout=REQUEST_TIMEOUT) as http:
        for i in range(50):
            guess = f"ik_{i:012x}_{'B' * 43}"
            statuses.append(http.post("/v1/events", json=VALID_INTERACTION, headers=bearer(guess)).status_code)
        assert statuses[:10] == [401] * 10
        assert set(statuses[10:]) == {429}, statuses
        # While blocked, even a correct guess is not confirmed: the answer does not depend on the key,
        # also when it is repeated at once (its record then comes from the worker's one-second cache).
        for _ in range(3):
            blocked = http.post("/v1/events", json=VALID_INTERACTION, headers=bearer(good))
            assert blocked.status_code == 429 and blocked.json()["error"]["code"] == "too_many_auth_failures"
            assert int(blocked.headers["retry-after"]) >= 1
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # the block lifts by itself once the window has passed
            response = http.post("/v1/events", json=VALID_INTERACTION, headers=bearer(good))
            if response.status_code != 429:
                break
            time.sleep(0.5)
        assert response.status_code == 202, response.text
    gateway.assert_alive_and_healthy()


def test_a_failure_limit_of_zero_switches_brute_force_protection_off(logged_gateway, redis_server):
    """For a gateway behind a proxy (every client shares its address), where the proxy limits instead."""
    gateway = logged_gateway(gateway_auth_failure_limit=0)
    good = make_key(redis_server.url)
    with httpx.Client(base_url=gateway.url, timeout=REQUEST_TIMEOUT) as http:
        assert http.post("/v1/events", json=VALID_INTERACTION, headers=bearer(good)).status_code == 202
        statuses = {http.post("/v1/events", json=VALID_INTERACTION, headers=bearer(f"ik_{i:012x}_{'B' * 43}")).status_code
                    for i in range(30)}
        assert statuses == {401}
        assert http.post("/v1/events", json=VALID_INTERACTION, headers=bearer(good)).status_code == 202


def test_keys_in_the_http_query_string_are_not_accepted(module_stack):
    gateway, key = module_stack.gateway, module_stack.key
    for query in ("api_key", "key", "access_token", "token", "authorization"):
        response = httpx.post(f"{gateway.url}/v1/events?{query}={key}", json=VALID_INTERACTION, timeout=REQUEST_TIMEOUT)
        assert (response.status_code, response.json()["error"]["code"]) == (401, "missing_api_key")


def test_websocket_accepts_the_query_parameter_that_browsers_need(module_stack):
    """Browsers cannot set headers on a WebSocket; the gateway takes ?api_key= there (documented in
    docs/gateway.md and docs/security.md) and keeps the query string out of its logs."""
    gateway, key = module_stack.gateway, module_stack.key
    with connect(f"{gateway.ws_url}?api_key={key}", open_timeout=REQUEST_TIMEOUT) as ws:
        ws.send(json.dumps(VALID_INTERACTION))
        assert json.loads(ws.recv(timeout=REQUEST_TIMEOUT))["accepted"] == 1
    assert ws_close_reason(gateway) == (1008, "missing_api_key")


def test_keys_never_reach_the_logs(logged_gateway, redis_server):
    gateway = logged_gateway(gateway_access_log=True)
    good = make_key(redis_server.url)
    revoked = make_key(redis_server.url)
    client = redis.Redis.from_url(redis_server.url)
    api_keys.revoke_key(client, api_keys.split_key(revoked))
    client.close()
    bad = f"ik_{api_keys.split_key(good)}_{'C' * 43}"
    garbage = "not-a-key-" + "D" * 40
    for key in (good, revoked, bad, garbage):
        post(gateway, bearer(key))
        post(gateway, {"Authorization": f"Basic {key}"})
        post(gateway, {}, path=f"/v1/events?api_key={key}")
        httpx.get(f"{gateway.url}/nowhere?api_key={key}", timeout=REQUEST_TIMEOUT)
        for kwargs in ({"additional_headers": bearer(key)}, {}):
            url = gateway.ws_url + ("" if kwargs else f"?api_key={key}")
            try:
                with connect(url, open_timeout=REQUEST_TIMEOUT, **kwargs) as ws:
                    ws.send(json.dumps(VALID_INTERACTION))
                    ws.recv(timeout=REQUEST_TIMEOUT)
            except ConnectionClosed:
                pass
    metrics = httpx.get(f"{gateway.url}/metrics", timeout=REQUEST_TIMEOUT).text
    gateway.stop()  # flushes everything it had to say
    logs = gateway.logs()
    assert '"msg":"POST /v1/events"' in logs  # the access log was on
    for key in (good, revoked, bad, garbage):
        secret = secret_of(key) if key.startswith("ik_") else key
        assert secret not in logs and secret not in metrics
    assert api_keys.split_key(good) not in metrics


def test_keys_are_never_stored_in_clear(module_stack):
    url = module_stack.redis.url
    keys = [make_key(url, name=f"k{i}") for i in range(3)]
    for key in keys:
        assert post(module_stack.gateway, bearer(key)).status_code == 202
    client = redis.Redis.from_url(url)
    stored = []
    for name in client.scan_iter(count=1000):
        kind = client.type(name)
        if kind == b"hash":
            stored.append(repr(client.hgetall(name)))
        elif kind == b"stream":
            stored.append(repr(client.xrange(name)))
        elif kind == b"string":
            stored.append(repr(client.get(name)))
        elif kind == b"set":
            stored.append(repr(client.smembers(name)))
        elif kind == b"zset":
            stored.append(repr(client.zrange(name, 0, -1)))
        elif kind == b"list":
            stored.append(repr(client.lrange(name, 0, -1)))
        stored.append(repr(name))
    client.close()
    everything = "\n".join(stored)
    assert api_keys.split_key(keys[0]) in everything  # ids are public and stamped on events
    for key in keys:
        assert secret_of(key) not in everything and key not in everything
        assert api_keys.hash_secret(key) in everything  # what is stored instead


def test_everything_binds_to_localhost_by_default(module_stack, monkeypatch):
    for name in ("GATEWAY_HOST", "DAGSTER_UI_HOST"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert settings.gateway_host == "127.0.0.1" and settings.dagster_ui_host == "127.0.0.1"
    # And the gateway process really listens on the loopback interface only.
    processes = [psutil.Process(module_stack.gateway.process.pid)]
    processes += processes[0].children(recursive=True)
    listening = {c.laddr.ip for p in processes for c in p.net_connections(kind="inet")
                 if c.status == psutil.CONN_LISTEN}
    assert listening == {"127.0.0.1"}
