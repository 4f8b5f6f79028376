"""Operations around WebSocket /v1/events/ws: connection ids in logs, JSON refusals of bad upgrades."""

from __future__ import annotations

import json

import httpx
import pytest
from websockets.sync.client import connect

from ingest_platform_tests.gateway.conftest import EVENT, auth, eventually, log_lines, make_key


def ws_url(gw) -> str:
    return gw.url.replace("http://", "ws://") + "/v1/events/ws"


def test_a_connection_id_is_echoed_on_the_upgrade_and_in_the_connections_log_lines(logged_gw, redis_client):
    key = make_key(redis_client, rate_per_second=1, burst=1)
    headers = {**auth(key), "X-Request-ID": "ws-conn-9"}
    with connect(ws_url(logged_gw), additional_headers=headers) as ws:
        assert ws.response.headers["x-request-id"] == "ws-conn-9"
        ws.send(json.dumps(EVENT))
        assert json.loads(ws.recv(timeout=10))["type"] == "ack"
        ws.send(json.dumps(EVENT))  # the bucket is empty: the server says wait, logs it, then acks
        told = json.loads(ws.recv(timeout=10))
        assert told["type"] == "wait" and told["reason"] == "rate_limited"
        assert json.loads(ws.recv(timeout=10))["type"] == "ack"

    def of_connection(msg: str) -> dict | None:
        return next((line for line in log_lines(logged_gw)
                     if line["msg"] == msg and line.get("connection_id") == "ws-conn-9"), None)

    waited = eventually(lambda: of_connection("websocket told to wait"))
    assert waited and waited["reason"] == "rate_limited" and waited["seq"] == 2
    closed = eventually(lambda: of_connection("WebSocket /v1/events/ws closed"))
    assert closed and closed["status"] == 101


def test_a_connection_without_a_request_id_gets_one(gw, redis_client):
    key = make_key(redis_client)
    with connect(ws_url(gw), additional_headers=auth(key)) as ws:
        assert ws.response.headers["x-request-id"]


@pytest.mark.parametrize(("headers", "status", "code"), [
    ({"Connection": "Upgrade", "Upgrade": "websocket"}, 400, "invalid_websocket_handshake"),  # no key
    ({"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Key": "not base64!",
      "Sec-WebSocket-Version": "13"}, 400, "invalid_websocket_handshake"),
])
def test_a_bad_websocket_upgrade_gets_a_json_error(gw, headers, status, code):
    response = httpx.get(f"{gw.url}/v1/events/ws", headers=headers)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == code and "Sec-WebSocket-Key" in error["message"]
