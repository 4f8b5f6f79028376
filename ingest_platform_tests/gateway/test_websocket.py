"""WebSocket /v1/events/ws with a real client: auth, acks after durability, flow control, closes."""

from __future__ import annotations

import json
import time

import pytest
import redis
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from ingest_platform.drain.micro_batch import drain_all_streams
from ingest_platform.storage import api_keys
from ingest_platform.storage.event_log import DrainLog
from ingest_platform_tests.gateway.conftest import EVENT, auth, make_key, start_gateway, stream_entries


def ws_url(gw, query: str = "") -> str:
    return gw.url.replace("http://", "ws://") + "/v1/events/ws" + query


def test_each_message_is_acked_in_order_only_once_its_events_are_in_redis(gw, redis_client):
    key = make_key(redis_client)
    with connect(ws_url(gw), additional_headers=auth(key)) as ws:
        ws.send(json.dumps({"events": [EVENT, {"user_interaction": {"user_id": 1}}, EVENT]}))
        ack = json.loads(ws.recv(timeout=10))
        # the ack has arrived: its accepted events must already be durable in the stream
        buffered = [e.event_id for _, entry in stream_entries(redis_client) for e in entry.events]
        assert ack["type"] == "ack" and ack["seq"] == 1
        assert (ack["accepted"], ack["rejected"]) == (2, 1)
        assert ack["results"][1]["code"] == "invalid_field"
        assert buffered == [ack["results"][0]["event_id"], ack["results"][2]["event_id"]]

        ws.send(json.dumps(EVENT).encode())  # binary frames holding JSON work too
        ws.send("{not json")
        second, third = json.loads(ws.recv(timeout=10)), json.loads(ws.recv(timeout=10))
        assert second["seq"] == 2 and second["accepted"] == 1
        assert third == {"type": "error", "seq": 3, "error": {
            "code": "malformed_json", "message": third["error"]["message"], "status": 400}}


def test_browser_style_auth_by_query_parameter(gw, redis_client):
    key = make_key(redis_client)
    with connect(ws_url(gw, f"?api_key={key}")) as ws:
        ws.send(json.dumps(EVENT))
        assert json.loads(ws.recv(timeout=10))["accepted"] == 1


@pytest.mark.parametrize("query", ["", "?api_key=ik_bad_key"])
def test_missing_or_invalid_key_closes_with_1008(gw, query):
    with connect(ws_url(gw, query)) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd.code == 1008
    assert closed.value.rcvd.reason in {"missing_api_key", "invalid_api_key"}


def test_revoked_key_closes_the_open_socket(gw, redis_client):
    key = make_key(redis_client)
    with connect(ws_url(gw), additional_headers=auth(key)) as ws:
        ws.send(json.dumps(EVENT))
        assert json.loads(ws.recv(timeout=10))["accepted"] == 1
        api_keys.revoke_key(redis_client, api_keys.split_key(key))
        with pytest.raises(ConnectionClosed) as closed:
            for _ in range(50):  # the key cache holds records for a second
                ws.send(json.dumps(EVENT))
                ws.recv(timeout=10)
                time.sleep(0.1)
        assert closed.value.rcvd.code == 1008 and closed.value.rcvd.reason == "api_key_revoked"


def test_oversized_message_closes_with_1009(gw, redis_client):
    key = make_key(redis_client)
    with connect(ws_url(gw), additional_headers=auth(key), max_size=None) as ws:
        ws.send(" " * (1024 * 1024 + 10))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd.code == 1009
    assert not stream_entries(redis_client)


def test_idle_connection_closes_with_1001(gateways, redis_client):
    gw = gateways(gateway_ws_idle_seconds=0.5)
    key = make_key(redis_client)
    with connect(ws_url(gw), additional_headers=auth(key)) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd.code == 1001


def test_backpressure_tells_the_client_to_wait_and_acks_once_drained(own_redis, tmp_path):
    client = redis.Redis.from_url(own_redis.url)
    gw = start_gateway(own_redis.url, tmp_path, gateway_backlog_high_water=2)
    try:
        key = make_key(client)
        with connect(ws_url(gw), additional_headers=auth(key)) as ws:
            sent, reply = 0, {"type": "ack"}
            while reply["type"] == "ack":  # until the backlog passes the mark and the gateway says wait
                ws.send(json.dumps(EVENT))
                sent += 1
                reply = json.loads(ws.recv(timeout=10))
                time.sleep(0.05)  # give the background backlog poll (every 250 ms) a chance
                assert sent < 200
            assert reply == {"type": "wait", "seq": sent, "reason": "backlog_full", "retry_after": 2}
            ws.send(json.dumps(EVENT))  # not read while intake is paused: TCP holds it

            drain_all_streams(DrainLog(client), tmp_path / "lake", max_entries=100)
            held, after = json.loads(ws.recv(timeout=20)), json.loads(ws.recv(timeout=20))
            assert (held["type"], held["seq"], held["accepted"]) == ("ack", sent, 1)  # nothing dropped
            assert (after["type"], after["seq"], after["accepted"]) == ("ack", sent + 1, 1)
    finally:
        gw.stop()
        client.close()
