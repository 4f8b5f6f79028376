"""Property-based fuzzing of POST /v1/events: whatever arrives, never a 5xx, never a crash.

Short by default (INGEST_FUZZ_EXAMPLES, default 120 per mode); set it higher for a long soak.
"""

from __future__ import annotations

import json
import os

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest_platform.contract import EVENT_TYPES
from ingest_platform_tests.gateway.conftest import auth, make_key

EXAMPLES = int(os.environ.get("INGEST_FUZZ_EXAMPLES", "120"))

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=12)
field_names = st.sampled_from(sorted({f for t in EVENT_TYPES.values() for f in t.payload_fields} | {"event_id"}))
# Strings that exercise sanitising and strict mode: timestamps, unicode, control characters.
tricky_text = st.text(max_size=200) | st.sampled_from([
    "2026-11-26T10:00:00Z", "2026-11-26T10:00:00+14:00", "2999-01-01T00:00:00", "0001-01-01T00:00:00-23:59",
    "not a time", "", " ", "\u0000", "e\u0301", "play", "explicit", "implicit", "x" * 129])
field_values = tricky_text | st.floats() | st.integers() | json_values
payloads = st.dictionaries(field_names | st.text(max_size=8), field_values, max_size=8)
events = st.dictionaries(st.sampled_from(sorted(EVENT_TYPES)) | st.text(max_size=12), payloads | json_values,
                         min_size=0, max_size=2) | json_values
bodies = (
    events.map(lambda e: json.dumps(e).encode())
    | st.lists(events, max_size=8).map(lambda es: json.dumps({"events": es}).encode())
    | st.binary(max_size=300)
    | st.text(max_size=300).map(str.encode)
)


@pytest.fixture(scope="module")
def fuzz_targets(gateways, shared_redis):
    import redis

    client = redis.Redis.from_url(shared_redis.url)
    targets = {"default": gateways(), "strict": gateways(gateway_strict=True, enable_feedback_events=False)}
    key = make_key(client, rate_per_second=1e9, burst=10**9)
    yield targets, key
    client.close()


@pytest.mark.parametrize("mode", ["default", "strict"])
def test_no_body_gets_a_5xx(fuzz_targets, mode):
    targets, key = fuzz_targets
    gw = targets[mode]
    with httpx.Client(base_url=gw.url, headers=auth(key), timeout=10) as http:

        @settings(max_examples=EXAMPLES, deadline=None, derandomize=False,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
        @given(body=bodies)
        def check(body: bytes):
            response = http.post("/v1/events", content=body)
            assert response.status_code < 500, (body, response.text)
            answer = response.json()
            assert ("error" in answer) if response.status_code >= 400 and "results" not in answer else "results" in answer

        check()
    assert httpx.get(f"{gw.url}/healthz").status_code == 200  # still alive


def test_no_websocket_message_breaks_the_connection(fuzz_targets):
    from websockets.sync.client import connect

    targets, key = fuzz_targets
    url = targets["default"].url.replace("http://", "ws://") + "/v1/events/ws"
    with connect(url, additional_headers=auth(key)) as ws:
        seq = 0

        @settings(max_examples=EXAMPLES, deadline=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
        @given(body=bodies)
        def check(body: bytes):
            nonlocal seq
            ws.send(body)
            seq += 1
            reply = json.loads(ws.recv(timeout=10))
            assert reply["seq"] == seq and reply["type"] in {"ack", "error"}

        check()
