"""WebSocket /v1/events/ws with a real client: auth, acks after durability, flow control, closes."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import httpx
import pytest
import redis
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from ingest_platform.drain.micro_batch import drain_all_streams
from ingest_platform.storage import api_keys
from ingest_platform.storage.event_log import DrainLog
from ingest_platform_tests.drain.helpers import landed_ids
from ingest_platform_tests.gateway.conftest import (
    EVENT,
    auth,
    eventually,
    make_key,
    metric,
    start_gateway,
    stream_entries,
)


def ws_url(gw, query: str = "") -> str:
    return gw.url.replace("http://", "ws://") + "/v1/events/ws" + query


def _event(event_id: str | None = None) -> dict:
    """An interaction stamped now (so the drain lands it as a valid row), with `event_id` if given."""
    fields = {**EVENT["user_interaction"], "timestamp": datetime.now(timezone.utc).isoformat()}
    if event_id is not None:
        fields["event_id"] = event_id
    return {"user_interaction": fields}


def _buffered_ids(client: redis.Redis) -> list[str]:
    return [e.event_id for _, entry in stream_entries(client) for e in entry.events]


def _no_message_within(ws, seconds: float) -> None:
    with pytest.raises(TimeoutError):
        ws.recv(timeout=seconds)


def _pause_writes(client: redis.Redis) -> None:
    """Redis keeps answering reads (so the gateway's health poll sees it up) but holds every write,
    the gateway's admit-and-append script included, until CLIENT UNPAUSE."""
    client.execute_command("CLIENT", "PAUSE", "60000", "WRITE")


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


def test_a_message_sent_a_second_after_revocation_on_an_open_socket_is_refused(gw, redis_client):
    """Revocation reaches open sockets at their next message: the first one sent more than a second
    (the key cache) after the revocation is not written and the socket is closed with 1008."""
    key = make_key(redis_client)
    with connect(ws_url(gw), additional_headers=auth(key)) as ws:
        ws.send(json.dumps(EVENT))
        assert json.loads(ws.recv(timeout=10))["accepted"] == 1  # the key is in the worker's cache
        api_keys.revoke_key(redis_client, api_keys.split_key(key))
        time.sleep(1.1)
        ws.send(json.dumps(_event("after-revocation")))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd.code == 1008 and closed.value.rcvd.reason == "api_key_revoked"
    assert "after-revocation" not in _buffered_ids(redis_client)


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


def test_a_message_over_the_burst_is_refused_and_counted_as_413(gw, redis_client):
    """As POST /v1/events: a message costing more than the key's burst can never be admitted, so it
    gets an error (not a wait) with status 413, and the metrics count it as 413, not 400."""
    key = make_key(redis_client, rate_per_second=0.5, burst=3)
    before = httpx.get(f"{gw.url}/metrics").text
    with connect(ws_url(gw), additional_headers=auth(key)) as ws:
        ws.send(json.dumps({"events": [EVENT] * 4}))
        reply = json.loads(ws.recv(timeout=10))
        ws.send("{not json")  # a 400 on the same route, for contrast
        unreadable = json.loads(ws.recv(timeout=10))
    assert reply["type"] == "error" and reply["seq"] == 1
    assert reply["error"]["code"] == "batch_exceeds_burst" and reply["error"]["status"] == 413
    assert unreadable["error"]["status"] == 400
    after = httpx.get(f"{gw.url}/metrics").text
    for status, count in (("413", 1), ("400", 1)):
        added = (metric(after, "gateway_requests_total", route="/v1/events/ws", status=status)
                 - metric(before, "gateway_requests_total", route="/v1/events/ws", status=status))
        assert added == count, (status, added)
    assert not stream_entries(redis_client)


def test_rate_limit_tells_the_client_to_wait_and_acks_the_held_message_later(gw, redis_client):
    key = make_key(redis_client, rate_per_second=0.5, burst=2)  # the third message must wait ~2 s
    with connect(ws_url(gw), additional_headers=auth(key)) as ws:
        for i in range(3):
            ws.send(json.dumps(_event(f"limited-{i}")))
        replies = [json.loads(ws.recv(timeout=10)) for _ in range(4)]
    assert [(r["type"], r["seq"]) for r in replies] == [("ack", 1), ("ack", 2), ("wait", 3), ("ack", 3)]
    wait = replies[2]
    assert wait["reason"] == "rate_limited" and 0 < wait["retry_after"] <= 2.1  # one token at 0.5/s
    assert replies[3]["results"][0]["event_id"] == "limited-2"  # waited for, not dropped
    assert sorted(_buffered_ids(redis_client)) == ["limited-0", "limited-1", "limited-2"]


def test_no_ack_while_redis_holds_the_write_and_the_ack_once_it_is_durable(own_redis, tmp_path):
    """CLIENT PAUSE WRITE: the write is sent and Redis holds it. A timeout longer than the pause,
    so this is only about the ack: none while the write is held, then the ack, with the event
    already in the stream."""
    client = redis.Redis.from_url(own_redis.url)
    gw = start_gateway(own_redis.url, tmp_path, gateway_redis_timeout_seconds=30)
    try:
        key = make_key(client)
        with connect(ws_url(gw), additional_headers=auth(key)) as ws:
            ws.send(json.dumps(_event()))
            assert json.loads(ws.recv(timeout=10))["type"] == "ack"
            _pause_writes(client)
            try:
                ws.send(json.dumps(_event("held-1")))
                _no_message_within(ws, 2)  # no ack, nor anything else, while the write is held
                assert "held-1" not in _buffered_ids(client)  # reads still answer
            finally:
                client.execute_command("CLIENT", "UNPAUSE")
            ack = json.loads(ws.recv(timeout=10))
            assert (ack["type"], ack["seq"], ack["results"][0]["event_id"]) == ("ack", 2, "held-1")
            assert _buffered_ids(client).count("held-1") == 1
    finally:
        gw.stop()
        client.close()


def test_an_unanswered_write_is_retried_with_the_same_ids_and_acked_only_once_durable(own_redis, tmp_path):
    """CLIENT PAUSE WRITE past GATEWAY_REDIS_TIMEOUT_SECONDS (1 s here): the write times out with its
    outcome unknown. The socket is told to wait, with the ids its events were sent with, is never
    acked meanwhile, and the gateway retries with those ids: after the pause the ack comes, and each
    event lands once after a drain however many attempts Redis ran."""
    client = redis.Redis.from_url(own_redis.url)
    gw = start_gateway(own_redis.url, tmp_path, gateway_redis_timeout_seconds=1)
    try:
        key = make_key(client)
        with connect(ws_url(gw), additional_headers=auth(key)) as ws:
            ws.send(json.dumps(_event()))
            assert json.loads(ws.recv(timeout=10))["type"] == "ack"
            _pause_writes(client)
            try:
                ws.send(json.dumps({"events": [_event(), _event("ws-client-1")]}))
                wait = json.loads(ws.recv(timeout=10))
                assert (wait["type"], wait["seq"], wait["reason"]) == ("wait", 2, "outcome_unknown"), wait
                assert [r["status"] for r in wait["results"]] == ["unknown", "unknown"]
                ids = [r["event_id"] for r in wait["results"]]
                assert ids[1] == "ws-client-1"
                _no_message_within(ws, 2.5)  # several timed-out retries meanwhile: never an ack
            finally:
                client.execute_command("CLIENT", "UNPAUSE")
            ack = json.loads(ws.recv(timeout=20))
            assert (ack["type"], ack["seq"]) == ("ack", 2), ack
            assert [r["event_id"] for r in ack["results"]] == ids
            assert set(ids) <= set(_buffered_ids(client))  # durable before the ack
        drain_all_streams(DrainLog(client), tmp_path / "lake", max_entries=1000)
        landed = landed_ids(tmp_path / "lake")
        assert [landed.count(i) for i in ids] == [1, 1], landed
    finally:
        gw.stop()
        client.close()


def test_redis_down_during_a_session_holds_the_message_until_it_is_back(own_redis, tmp_path):
    """Redis killed mid-session: the message is held (wait, no ack), acked once Redis is back; a new
    socket whose key the worker has not seen meanwhile is closed with 1013 (try again later)."""
    client = redis.Redis.from_url(own_redis.url)
    gw = start_gateway(own_redis.url, tmp_path)
    try:
        key, unseen = make_key(client), make_key(client)
        with connect(ws_url(gw), additional_headers=auth(key)) as ws:
            ws.send(json.dumps(_event()))
            assert json.loads(ws.recv(timeout=10))["type"] == "ack"
            own_redis.stop(kill=True)
            ws.send(json.dumps(_event("during-outage")))
            wait = json.loads(ws.recv(timeout=10))
            # buffer_unavailable: the write could not even be sent (connection refused). Only if the
            # write raced the kill onto the dying connection: outcome_unknown, retried the same way.
            assert wait["type"] == "wait" and wait["seq"] == 2, wait
            assert wait["reason"] in {"buffer_unavailable", "outcome_unknown"}
            _no_message_within(ws, 1)

            with connect(ws_url(gw), additional_headers=auth(unseen)) as other:
                with pytest.raises(ConnectionClosed) as closed:
                    other.recv(timeout=10)
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1013, "buffer_unavailable")

            own_redis.start()
            ack = json.loads(ws.recv(timeout=20))
            assert (ack["type"], ack["seq"], ack["results"][0]["event_id"]) == ("ack", 2, "during-outage")
            assert "during-outage" in _buffered_ids(client)

        def unseen_key_works() -> bool:
            with connect(ws_url(gw), additional_headers=auth(unseen)) as ws:
                ws.send(json.dumps(_event()))
                return json.loads(ws.recv(timeout=10))["type"] == "ack"
        assert eventually(unseen_key_works, timeout=10)
    finally:
        gw.stop()
        client.close()
