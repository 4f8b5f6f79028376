"""Fuzzing the gateway's HTTP and WebSocket interfaces: hypothesis strategies of hostile bodies,
schemathesis against the gateway's own OpenAPI description, and the on-demand long run.

Properties checked on every generated case: no 5xx (a documented 503 with an error code aside),
no crash (the process is alive and healthy afterwards), no hang (every call has a timeout), and
every rejection is machine-readable JSON (`support.check_answer`).

The suite runs short versions (INGEST_FUZZ_EXAMPLES, default 150 per target). The long run starts
its own Redis and gateway:

    python -m ingest_platform_tests.reliability.fuzzing --examples 10000

and prints the number of cases each target ran.
"""

from __future__ import annotations

import argparse
import json
import os
import string
import tempfile
import warnings
from dataclasses import dataclass, field
from datetime import timedelta, timezone
from pathlib import Path

import httpx
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import HypothesisDeprecationWarning, Unsatisfiable

from ingest_platform.contract import EVENT_TYPES
from ingest_platform_tests.reliability.support import (
    REQUEST_TIMEOUT, LoggedGateway, bearer, check_answer, check_ws_reply, make_key)

DEFAULT_EXAMPLES = int(os.environ.get("INGEST_FUZZ_EXAMPLES", "150"))

# --- strategies -----------------------------------------------------------------------------------

SQL_AND_SHELL = [
    "x'); DROP VIEW user_interactions; --", "' OR '1'='1", "\"; DROP TABLE t; --", "1; SELECT 1",
    "$(rm -rf /)", "`reboot`", "a|b&c;d>e<f", "%s%n%x", "${jndi:ldap://x}", "../../etc/passwd",
    "{{7*7}}", "\\", "\\\\'", "/* */", "read_parquet('/etc/passwd')", "'; ATTACH '/tmp/x' AS x; --",
]
TIMESTAMPS = [
    "2026-11-26T10:00:00Z", "2026-11-26T10:00:00+14:00", "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z",
    "2026-02-30T00:00:00Z", "2026-11-26", "2026-11-26T25:00:00Z", "not a time", "", "NaN",
    "2026-11-26T10:00:00+99:00", "1e999", "2026-11-26T10:00:00.123456789Z",
]
hostile_text = (
    st.sampled_from(SQL_AND_SHELL + TIMESTAMPS + ["", " ", "\u0000", "\ufeff", "e\u0301", "\u202e",
                                                   "\ud7ff", "𝄞" * 10, "x" * 129, "x" * 5000, "play",
                                                   "explicit", "implicit", "NaN", "Infinity", "4.5"])
    | st.text(max_size=60)
    | st.text(alphabet=string.printable, max_size=60)
)
# Timestamps from any instant in any offset (the far ends of the calendar overflow naive code).
timestamps = st.datetimes(timezones=st.timezones() | st.builds(
    lambda minutes: timezone(timedelta(minutes=minutes)), st.integers(-1439, 1439))).map(lambda d: d.isoformat())
numbers = (st.integers() | st.floats() | st.integers(min_value=-(10**400), max_value=10**400)
           | st.decimals(allow_nan=False, allow_infinity=False, places=None).map(float))
scalars = st.none() | st.booleans() | numbers | hostile_text
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(hostile_text, inner, max_size=4), max_leaves=15)
field_names = sorted({f for t in EVENT_TYPES.values() for f in t.payload_fields} | {"event_id"})


@st.composite
def near_valid_payloads(draw, event_type: str) -> dict:
    """A payload that is mostly right: every field present, some replaced by hostile values,
    numbers as strings, NaN, extra keys, or dropped."""
    names = EVENT_TYPES[event_type].payload_fields
    base = {"user_id": "u1", "session_id": "s1", "track_id": "t1", "action": "play", "recommendation_id": "r1",
            "feedback_type": "explicit", "rating": 4.5, "timestamp": "2026-11-26T10:00:00Z"}
    payload = {name: base[name] for name in names if name in base}
    for name in draw(st.lists(st.sampled_from(sorted(set(names) | {"event_id"})), max_size=4, unique=True)):
        payload[name] = draw(st.one_of(
            hostile_text, timestamps, numbers, numbers.map(str), st.none(), json_values,
            st.sampled_from([float("nan"), float("inf"), float("-inf")])))
    if "timestamp" in payload and draw(st.booleans()):  # the field with the most parsing behind it
        payload["timestamp"] = draw(st.sampled_from(TIMESTAMPS) | timestamps)
    for name in draw(st.lists(st.sampled_from(list(payload)), max_size=2, unique=True)):
        if draw(st.booleans()):
            del payload[name]
    if draw(st.integers(0, 9)) == 0:
        payload[draw(hostile_text)] = draw(scalars)
    return payload


events = st.one_of(
    st.sampled_from(sorted(EVENT_TYPES)).flatmap(lambda t: near_valid_payloads(t).map(lambda p: {t: p})),
    st.dictionaries(st.sampled_from(sorted(EVENT_TYPES)) | hostile_text, json_values, max_size=3),
    json_values,
)


def _dumps(value) -> bytes:
    # allow_nan: NaN / Infinity literals are what hostile clients send; the gateway must refuse them.
    return json.dumps(value, allow_nan=True).encode()


def _deep_array(depth: int) -> bytes:
    return ("[" * depth + "]" * depth).encode()


def _deep_event(depth: int) -> bytes:
    return ('{"user_interaction": ' + '{"a":' * depth + "1" + "}" * depth + "}").encode()


bodies = st.one_of(
    events.map(_dumps),
    st.lists(events, max_size=12).map(lambda es: _dumps({"events": es})),
    st.dictionaries(hostile_text, json_values, max_size=3).map(_dumps),
    st.binary(max_size=400),
    st.text(max_size=400).map(lambda t: t.encode("utf-8", "surrogatepass")),
    events.map(_dumps).flatmap(lambda b: st.integers(0, max(0, len(b) - 1)).map(lambda i: b[:i])),  # truncated
    events.map(_dumps).flatmap(lambda b: st.tuples(st.integers(0, len(b)), st.binary(min_size=1, max_size=4))
                               .map(lambda ix: b[:ix[0]] + ix[1] + b[ix[0]:])),  # corrupted bytes
    st.integers(1, 3000).map(_deep_array),
    st.integers(1, 3000).map(_deep_event),
)
content_types = st.sampled_from([None, "application/json", "text/plain", "application/x-www-form-urlencoded",
                                 "multipart/form-data; boundary=x", "application/json; charset=latin-1", b"\xff"])


def _settings(examples: int):
    return settings(max_examples=examples, deadline=None, database=None, print_blob=True,
                    phases=[Phase.explicit, Phase.generate, Phase.shrink],
                    suppress_health_check=list(HealthCheck))


# --- runners --------------------------------------------------------------------------------------


@dataclass
class FuzzCounts:
    cases: dict[str, int] = field(default_factory=dict)

    def add(self, target: str, n: int = 1) -> None:
        self.cases[target] = self.cases.get(target, 0) + n

    @property
    def total(self) -> int:
        return sum(self.cases.values())


def fuzz_http(gateway: LoggedGateway, key: str, examples: int, counts: FuzzCounts) -> None:
    """POST /v1/events with hostile bodies and content types."""
    with httpx.Client(base_url=gateway.url, timeout=REQUEST_TIMEOUT) as http:

        @_settings(examples)
        @given(body=bodies, content_type=content_types)
        def case(body: bytes, content_type: str | bytes | None) -> None:
            headers = bearer(key)
            if content_type is not None:
                headers["Content-Type"] = content_type
            response = http.post("/v1/events", content=body, headers=headers)
            counts.add("http")
            check_answer(response.status_code, response.content, body[:300])

        case()
    gateway.assert_alive_and_healthy()


def fuzz_websocket(gateway: LoggedGateway, key: str, examples: int, counts: FuzzCounts) -> None:
    """The same bodies as text and binary frames over one WebSocket: every message gets its ack or
    error in order, and the connection stays open."""
    from websockets.sync.client import connect

    with connect(gateway.ws_url, additional_headers=bearer(key), max_size=None,
                 open_timeout=REQUEST_TIMEOUT, close_timeout=REQUEST_TIMEOUT) as ws:
        seq = 0

        @_settings(examples)
        @given(body=bodies, binary=st.booleans())
        def case(body: bytes, binary: bool) -> None:
            nonlocal seq
            if binary:
                ws.send(body)
            else:  # a text frame must be valid UTF-8: send the body's text (lossy for binary noise)
                ws.send(body.decode("utf-8", "replace"))
            seq += 1
            counts.add("websocket")
            while True:
                reply = json.loads(ws.recv(timeout=REQUEST_TIMEOUT))
                if reply["type"] != "wait":
                    break
            check_ws_reply(reply, seq, body[:300])

        case()
    gateway.assert_alive_and_healthy()


def fuzz_openapi(gateway: LoggedGateway, key: str, examples: int, counts: FuzzCounts) -> None:
    """schemathesis: positive and negative cases generated from /openapi.json for every HTTP
    operation, each checked by schemathesis's own conformance checks and by `check_answer`."""
    import schemathesis
    from schemathesis import GenerationMode
    from schemathesis.checks import (content_type_conformance, not_a_server_error, response_schema_conformance,
                                     status_code_conformance)

    schema = schemathesis.openapi.from_url(f"{gateway.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    # The WebSocket is described for documentation (101); a plain GET of it is fuzzed in fuzz_websocket.
    operations = [op for op in operations if op.path != "/v1/events/ws"]
    # Operations without input (GET /healthz, /readyz, /metrics) have little to vary.
    def budget(operation) -> int:
        has_input = operation.body or list(operation.iter_parameters())
        return max(1, examples // 2) if has_input else max(1, examples // 50)

    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            label = f"openapi {operation.method.upper()} {operation.path} {mode.value}"

            @_settings(budget(operation))
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case) -> None:
                # Always the fuzzer's own key: generated credentials would only test the brute-force
                # limit (test_auth_abuse.py does) and lock the fuzzer out.
                headers = {**(case.headers or {}), "Authorization": f"Bearer {key}"}
                response = case.call(base_url=gateway.url, headers=headers, timeout=REQUEST_TIMEOUT)
                counts.add(label)
                case.validate_response(response, checks=checks)
                if case.path == "/v1/events":
                    check_answer(response.status_code, response.content, case.body)

            try:
                run()
            except Unsatisfiable:
                # An operation without parameters or body (GET /healthz) has no invalid input.
                if mode is not GenerationMode.NEGATIVE:
                    raise
    gateway.assert_alive_and_healthy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=10_000, help="generated cases per target (http, ws, openapi)")
    parser.add_argument("--targets", nargs="*", default=["http", "websocket", "openapi"])
    args = parser.parse_args()
    # The WebSocket client's background thread touches `random` while hypothesis draws: harmless here.
    warnings.filterwarnings("ignore", category=HypothesisDeprecationWarning)

    from ingest_platform.storage.redis_server import RedisServer

    counts = FuzzCounts()
    with tempfile.TemporaryDirectory(prefix="ingest-fuzz-") as tmp:
        root = Path(tmp)
        server = RedisServer(directory=root / "redis").start()
        gateway = None
        try:
            key = make_key(server.url, rate_per_second=1e9, burst=10**9)
            (root / "data").mkdir()
            gateway = LoggedGateway(server.url, root / "data", root / "gateway.log")
            runners = {"http": fuzz_http, "websocket": fuzz_websocket, "openapi": fuzz_openapi}
            for target in args.targets:
                runners[target](gateway, key, args.examples, counts)
                print(f"{target}: done, {counts.total} cases so far", flush=True)
        finally:
            if gateway:
                gateway.stop()
            server.stop()
    for target, n in sorted(counts.cases.items()):
        print(f"{n:>8}  {target}")
    print(f"{counts.total:>8}  cases in all; no 5xx, no crash, no hang, every rejection machine-readable")


if __name__ == "__main__":
    main()
