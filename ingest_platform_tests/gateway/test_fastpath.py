"""POST /v1/events on the gateway's own HTTP path (fastpath.py), spoken to over raw sockets: the
HTTP/1.1 features uvicorn handled for it before (pipelining, 100-continue, chunked bodies,
HTTP/1.0, keep-alive) still work, and other routes still go through the ASGI app."""

from __future__ import annotations

import json
import socket

import httpx

from ingest_platform_tests.gateway.conftest import EVENT, auth, make_key, stream_entries

BODY = json.dumps(EVENT).encode()


def _request(key: str, body: bytes = BODY, path: str = "/v1/events", version: str = "1.1",
             extra: str = "") -> bytes:
    head = (f"POST {path} HTTP/{version}\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n")
    return head.encode() + body


def _read_response(s: socket.socket, buffered: bytearray) -> tuple[bytes, dict]:
    """(head, JSON body) of the next response on `s`; bytes past it stay in `buffered`."""
    while b"\r\n\r\n" not in buffered:
        chunk = s.recv(65536)
        assert chunk, "connection closed before a response"
        buffered += chunk
    head, _, rest = bytes(buffered).partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.lower().split(b"\r\n") if line.startswith(b"content-length")))
    while len(rest) < length:
        chunk = s.recv(65536)
        assert chunk, "connection closed inside a response"
        rest += chunk
    buffered[:] = rest[length:]
    return head, json.loads(rest[:length])


def _connect(gw) -> socket.socket:
    return socket.create_connection(("127.0.0.1", gw.port), timeout=10)


def test_pipelined_requests_are_answered_in_order(gw, redis_client):
    key = make_key(redis_client)
    bodies = [json.dumps({"user_interaction": {**EVENT["user_interaction"], "event_id": f"pipe-{i}"}}).encode()
              for i in range(3)]
    with _connect(gw) as s:
        s.sendall(b"".join(_request(key, body) for body in bodies))  # all three before any answer
        buffered = bytearray()
        answers = [_read_response(s, buffered) for _ in bodies]
    assert [head.split(b" ")[1] for head, _ in answers] == [b"202"] * 3
    assert [body["results"][0]["event_id"] for _, body in answers] == ["pipe-0", "pipe-1", "pipe-2"]
    assert sum(len(entry.events) for _, entry in stream_entries(redis_client)) == 3


def test_expect_100_continue_gets_its_interim_response(gw, redis_client):
    key = make_key(redis_client)
    with _connect(gw) as s:
        s.sendall(_request(key, extra="Expect: 100-continue\r\n")[:-len(BODY)])  # the head alone
        interim = s.recv(65536)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"), interim
        s.sendall(BODY)
        head, body = _read_response(s, bytearray(interim[len(b"HTTP/1.1 100 Continue\r\n\r\n"):]))
    assert head.startswith(b"HTTP/1.1 202 ") and body["accepted"] == 1


def test_a_chunked_body_is_read_whole(gw, redis_client):
    key = make_key(redis_client)
    chunks = [BODY[:10], BODY[10:]]
    encoded = b"".join(b"%x\r\n%b\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    head = (f"POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
            "Transfer-Encoding: chunked\r\n\r\n").encode()
    with _connect(gw) as s:
        s.sendall(head + encoded)
        response_head, body = _read_response(s, bytearray())
    assert response_head.startswith(b"HTTP/1.1 202 "), body
    assert len(stream_entries(redis_client)) == 1


def test_a_chunked_body_over_the_limit_is_413(gateways, redis_client):
    gw = gateways(max_body_bytes=1000)
    key = make_key(redis_client)
    head = (f"POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
            "Transfer-Encoding: chunked\r\n\r\n").encode()
    chunk = b" " * 600
    with _connect(gw) as s:
        s.sendall(head + (b"%x\r\n%b\r\n" % (len(chunk), chunk)) * 2 + b"0\r\n\r\n")
        response_head, body = _read_response(s, bytearray())
        assert response_head.startswith(b"HTTP/1.1 413 ") and body["error"]["code"] == "body_too_large"
        s.sendall(_request(key))  # the connection is still usable
        response_head, body = _read_response(s, bytearray())
    assert response_head.startswith(b"HTTP/1.1 202 ")


def test_http_1_0_gets_its_answer_and_the_connection_closed(gw, redis_client):
    key = make_key(redis_client)
    with _connect(gw) as s:
        s.sendall(_request(key, version="1.0"))
        head, body = _read_response(s, bytearray())
        assert s.recv(65536) == b""  # closed by the server
    assert head.startswith(b"HTTP/1.1 202 ") and b"connection: close" in head.lower()
    assert body["accepted"] == 1


def test_keep_alive_serves_many_requests_on_one_connection(gw, redis_client):
    key = make_key(redis_client)
    with httpx.Client(base_url=gw.url, headers=auth(key)) as client:
        responses = [client.post("/v1/events", content=BODY) for _ in range(20)]
    assert {r.status_code for r in responses} == {202}
    assert len({r.json()["results"][0]["event_id"] for r in responses}) == 20
    assert len({r.headers["x-request-id"] for r in responses}) == 20
    assert all("date" in r.headers and r.headers["content-type"] == "application/json" for r in responses)


def test_other_forms_of_the_path_still_reach_the_same_endpoint(gw, redis_client):
    """A query string takes the ASGI route (the same endpoint code): same answers."""
    key = make_key(redis_client)
    response = httpx.post(f"{gw.url}/v1/events?source=test", content=BODY, headers=auth(key))
    assert response.status_code == 202 and response.json()["accepted"] == 1
    assert httpx.post(f"{gw.url}/v1/events?source=test", content=BODY).status_code == 401
    assert httpx.get(f"{gw.url}/v1/events").status_code == 405
