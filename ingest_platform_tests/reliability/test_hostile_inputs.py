"""Hostile inputs, one by one: each gets a clear 4xx (or a per-event rejection), never a 5xx, a
crash or a hang, and a slow client never holds the server or other clients up."""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import pytest
from websockets.sync.client import connect

from ingest_platform_tests.reliability.support import REQUEST_TIMEOUT, VALID_INTERACTION, bearer, check_answer

BOUND = 30.0  # the longest any slow client may hold a connection here (its timeouts are 2 s)


def post(stack, body: bytes, headers: dict | None = None) -> httpx.Response:
    return httpx.post(f"{stack.gateway.url}/v1/events", content=body,
                      headers={**bearer(stack.key), **(headers or {})}, timeout=REQUEST_TIMEOUT)


def interaction(**changes) -> dict:
    return {"user_interaction": {**VALID_INTERACTION["user_interaction"], **changes}}


def feedback(rating) -> bytes:
    return ('{"feedback_event": {"user_id": "u1", "recommendation_id": "r1", "feedback_type": "explicit", '
            f'"rating": {rating}, "timestamp": "2026-11-26T10:00:00Z"}}}}').encode()


@pytest.mark.parametrize("body, status, code", [
    (b"[" * 100_000 + b"]" * 100_000, 400, "not_an_object"),  # refused at the first byte
    (b'{"events": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", 400, "too_deep"),
    (b'{"user_interaction": ' + b'{"a":' * 50_000 + b"1" + b"}" * 50_000 + b"}", 400, "too_deep"),
    (b'{"events": [' + b",".join([json.dumps(VALID_INTERACTION).encode()] * 20_000) + b"]}", 413, "body_too_large"),
    (b'{"user_interaction": {"user_id": "' + b"x" * 2_000_000 + b'"}}', 413, "body_too_large"),
    (b'{"user_interaction": {"user_id": "\xff\xfe", "session_id": "s"}}', 400, "invalid_utf8"),
    (b'{"user_interaction": {"user_id": "\xed\xa0\x80"}}', 400, "invalid_utf8"),  # an encoded surrogate
    (b'\xef\xbb\xbf{"user_interaction": {}}', 400, "malformed_json"),  # a byte-order mark
    (feedback("NaN"), 400, "malformed_json"),
    (feedback("Infinity"), 400, "malformed_json"),
    (feedback("-Infinity"), 400, "malformed_json"),
    (b'{"events": "' + b"a" * 1000 + b'"}', 400, "invalid_batch"),
    (b"", 400, "malformed_json"),
    (b"null", 400, "not_an_object"),
])
def test_unreadable_bodies_get_a_clear_400_or_413(module_stack, body, status, code):
    response = post(module_stack, body)
    assert (response.status_code, response.json()["error"]["code"]) == (status, code)


@pytest.mark.parametrize("body, code", [
    (feedback('"4.5"'), "invalid_field"),  # a number as a string
    (feedback("1e999"), "invalid_field"),  # beyond a double
    (feedback("4" * 500), "invalid_field"),
    (json.dumps(interaction(user_id=1)).encode(), "invalid_field"),
    (json.dumps(interaction(user_id=["u1"])).encode(), "invalid_field"),
    (json.dumps(interaction(timestamp=1764151200)).encode(), "invalid_field"),  # epoch seconds as a number
    (json.dumps(interaction(user_id={"$ne": None})).encode(), "invalid_field"),  # NoSQL-style operator
    (json.dumps(interaction(extra="x")).encode(), "invalid_field"),
    (json.dumps({"user_interaction": None}).encode(), "invalid_field"),
])
def test_wrongly_typed_values_are_rejected_per_event(module_stack, body, code):
    response = post(module_stack, body)
    answer = check_answer(response.status_code, response.content, body)
    assert response.status_code == 422 and answer["results"][0]["code"] == code


@pytest.mark.parametrize("timestamp", [
    "0001-01-01T00:00:00+14:00",  # before year 1 in UTC
    "9999-12-31T23:59:59-14:00",  # after year 9999 in UTC
    "0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999+00:00", "2026-11-26T10:00:00.123456789Z",
])
def test_timestamps_at_the_ends_of_the_calendar_never_crash_the_gateway(module_stack, timestamp):
    """Regression: converting such an instant to UTC overflows Python's datetime (was a 500)."""
    response = post(module_stack, json.dumps(interaction(timestamp=timestamp)).encode())
    answer = check_answer(response.status_code, response.content, timestamp)
    assert response.status_code == 202, answer  # a value problem: validation dead-letters it downstream


def test_a_10_mb_header_is_refused_and_the_server_stays_up(module_stack):
    gateway = module_stack.gateway
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=REQUEST_TIMEOUT) as s:
        body = json.dumps(VALID_INTERACTION).encode()
        request = (b"POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + module_stack.key.encode()
                   + b"\r\nX-Padding: " + b"a" * 10_000_000 + b"\r\nContent-Type: application/json"
                   + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        try:
            s.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before the end of the header: fine, as long as nothing was accepted
        reply = _read_reply(s)
    status = int(reply.split(b" ", 2)[1]) if reply else None
    assert status == 431, reply[:300]
    assert json.loads(reply.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "headers_too_large"
    gateway.assert_alive_and_healthy()


def _read_reply(s: socket.socket) -> bytes:
    chunks = []
    try:
        while chunk := s.recv(65536):
            chunks.append(chunk)
            data = b"".join(chunks)
            head, sep, rest = data.partition(b"\r\n\r\n")
            if sep and b"content-length:" in head.lower():
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                if len(rest) >= length:
                    return data
    except (ConnectionResetError, TimeoutError):
        pass
    return b"".join(chunks)


@pytest.mark.parametrize("request_bytes", [
    b"GARBAGE\r\n\r\n",
    b"GET / HTTP/9.9\r\n\r\n",
    b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n{}",
    b"POST /v1/events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
])
def test_malformed_http_gets_a_json_400(module_stack, request_bytes):
    """Every rejection is JSON, even for bytes that are not HTTP (uvicorn's own answer is text)."""
    with socket.create_connection(("127.0.0.1", module_stack.gateway.port), timeout=REQUEST_TIMEOUT) as s:
        s.sendall(request_bytes)
        reply = _read_reply(s)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), reply[:300]
    assert json.loads(body)["error"]["code"] == "malformed_http"
    module_stack.gateway.assert_alive_and_healthy()


class SlowClient(threading.Thread):
    """Sends the start of a request, then one byte every 0.3 s, and notes when the server gives up."""

    def __init__(self, port: int, start: bytes, drip: bytes):
        super().__init__(daemon=True)
        self.port, self.start_bytes, self.drip = port, start, drip
        self.outcome: str | None = None
        self.reply = b""

    def run(self) -> None:
        deadline = time.monotonic() + BOUND
        with socket.create_connection(("127.0.0.1", self.port), timeout=0.3) as s:
            if self.start_bytes:
                s.sendall(self.start_bytes)
            while time.monotonic() < deadline:
                try:
                    if self.drip:
                        s.sendall(self.drip)
                    data = s.recv(65536)
                except TimeoutError:
                    continue
                except (BrokenPipeError, ConnectionResetError):
                    self.outcome = "closed"
                    return
                self.reply += data
                if not data:
                    self.outcome = "closed"
                    return
            self.outcome = "still open"


@pytest.mark.parametrize("kind", ["slow body", "slow headers", "silent connection"])
def test_slow_clients_are_cut_off_while_others_are_served(module_stack, kind):
    gateway = module_stack.gateway
    head = (b"POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + module_stack.key.encode()
            + b"\r\nContent-Length: 100000\r\n\r\n{")
    start, drip = {"slow body": (head, b" "), "slow headers": (b"POST /v1/events HTTP/1.1\r\n", b"X-A: b\r\n"),
                   "silent connection": (b"", b"")}[kind]
    clients = [SlowClient(gateway.port, start, drip) for _ in range(30)]
    for client in clients:
        client.start()
    served = 0
    with httpx.Client(base_url=gateway.url, headers=bearer(module_stack.key), timeout=REQUEST_TIMEOUT) as http:
        while any(c.is_alive() for c in clients):
            response = http.post("/v1/events", json=VALID_INTERACTION)
            assert response.status_code == 202, response.text
            served += 1
            time.sleep(0.05)
    assert served > 0
    assert {c.outcome for c in clients} == {"closed"}, [c.outcome for c in clients]
    if kind == "slow body":  # the server answers before closing: the client learns why
        assert all(b" 408 " in c.reply.split(b"\r\n")[0] and b"body_timeout" in c.reply for c in clients)
    gateway.assert_alive_and_healthy()


def test_binary_websocket_frames_are_read_as_json_and_garbage_gets_an_error(module_stack):
    with connect(module_stack.gateway.ws_url, additional_headers=bearer(module_stack.key),
                 open_timeout=REQUEST_TIMEOUT) as ws:
        replies = []
        for frame in (json.dumps(VALID_INTERACTION).encode(), b"\xff\xfe\x00garbage", b"\x00" * 1000,
                      feedback("NaN"), b'{"events": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
                      "{\"user_interaction\": {}}", json.dumps(VALID_INTERACTION)):
            ws.send(frame)
            replies.append(json.loads(ws.recv(timeout=REQUEST_TIMEOUT)))
    assert [r["seq"] for r in replies] == [1, 2, 3, 4, 5, 6, 7]
    assert [r["type"] for r in replies] == ["ack", "error", "error", "error", "error", "ack", "ack"]
    assert [r["error"]["code"] for r in replies if r["type"] == "error"] == [
        "invalid_utf8", "malformed_json", "malformed_json", "too_deep"]
    assert [r["accepted"] for r in replies if r["type"] == "ack"] == [1, 0, 1]
    module_stack.gateway.assert_alive_and_healthy()


def test_calendar_edge_timestamps_become_dead_letters_downstream(gateway, api_key, platform_env):
    """Regression, end to end: such events were a 500 at the gateway; accepted now, the drain must
    turn them into dead letters (they are decades outside the horizon), not crash on them."""
    import duckdb

    from ingest_platform_tests.reliability.test_sql_injection import drain_and_refresh

    stamps = ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00Z"]
    events = [interaction(timestamp=stamp, event_id=f"edge-{i}") for i, stamp in enumerate(stamps)]
    response = httpx.post(f"{gateway.url}/v1/events", json={"events": events}, headers=bearer(api_key),
                          timeout=REQUEST_TIMEOUT)
    assert response.status_code == 202 and response.json()["accepted"] == len(stamps), response.text
    drain_and_refresh()
    con = duckdb.connect(str(platform_env / "warehouse.duckdb"), read_only=True)
    letters = con.execute("SELECT event_id, raw_payload FROM dead_letter_events ORDER BY event_id").fetchall()
    con.close()
    assert [event_id for event_id, _ in letters] == [f"edge-{i}" for i in range(len(stamps))]
    assert [json.loads(raw)["user_interaction"]["timestamp"] for _, raw in letters] == stamps
