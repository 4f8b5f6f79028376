"""POST /v1/events against a real gateway process and Redis: acceptance, rejections, auth, ops."""

from __future__ import annotations

import json
import re
import time
from datetime import datetime, timezone

import httpx
import pytest

from ingest_platform.storage import api_keys
from ingest_platform_tests.gateway.conftest import (
    EVENT,
    FEEDBACK,
    assert_documented,
    auth,
    eventually,
    log_lines,
    make_key,
    metric,
    post,
    stream_entries,
)


def test_single_event_is_accepted_stamped_and_buffered(gw, redis_client):
    key = make_key(redis_client)
    raw = json.dumps(EVENT).encode()
    response = post(gw, key, raw)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["accepted"] == 1 and body["rejected"] == 0
    (result,) = body["results"]
    assert result["index"] == 0 and result["status"] == "accepted" and len(result["event_id"]) == 36
    assert response.headers["x-request-id"]
    assert int(response.headers["ratelimit-remaining"]) < int(response.headers["ratelimit-limit"])

    ((entry_id, entry),) = stream_entries(redis_client)
    assert entry.event_type == "user_interaction"
    assert entry.api_key_id == api_keys.split_key(key)
    assert entry.received_at.endswith("Z")
    (event,) = entry.events
    assert event.event_id == result["event_id"]
    assert event.fields["timestamp"] == "2026-11-26T10:00:00.000000Z"  # normalised to UTC
    assert bytes(event.raw) == raw  # exactly as sent


def test_batch_gets_a_result_per_event_and_only_accepted_ones_are_buffered(gw, redis_client):
    key = make_key(redis_client)
    with_id = {"user_interaction": {**EVENT["user_interaction"], "event_id": "client-id-1"}}
    events = [EVENT, {"user_interaction": {"user_id": "u1"}}, FEEDBACK, 7, with_id]
    response = post(gw, key, {"events": events})
    assert response.status_code == 202
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (3, 2)
    assert [r["status"] for r in body["results"]] == ["accepted", "rejected", "accepted", "rejected", "accepted"]
    assert [r["index"] for r in body["results"]] == [0, 1, 2, 3, 4]
    assert body["results"][1]["code"] == "invalid_field" and "session_id" in body["results"][1]["reason"]
    assert body["results"][3]["code"] == "not_an_object"
    assert body["results"][4]["event_id"] == "client-id-1"  # client ids are honoured

    interactions = stream_entries(redis_client)
    feedback = stream_entries(redis_client, "feedback_event")
    assert len(interactions) == 1 and len(feedback) == 1  # one entry per event type per request
    assert [e.event_id for e in interactions[0][1].events] == [body["results"][0]["event_id"], "client-id-1"]
    assert feedback[0][1].events[0].event_id == body["results"][2]["event_id"]


def test_values_are_sanitised_and_the_raw_payload_kept(gw, redis_client):
    key = make_key(redis_client)
    decomposed = "Beyonce\u0301"  # e + combining accent: NFC makes it one character
    event = {"user_interaction": {"user_id": f"  {decomposed}\x07 ", "session_id": "s\x001", "track_id": "t1",
                                  "action": "play", "timestamp": "2026-11-26T10:00:00"}}
    raw = json.dumps(event, ensure_ascii=False).encode()
    assert post(gw, key, raw).status_code == 202
    (event_record,) = stream_entries(redis_client)[0][1].events
    assert event_record.fields["user_id"] == "Beyonc\u00e9"
    assert event_record.fields["session_id"] == "s1"
    assert event_record.fields["timestamp"] == "2026-11-26T10:00:00.000000Z"  # no offset: UTC
    assert bytes(event_record.raw) == raw


def test_value_problems_pass_through_by_default(gw, redis_client):
    """Unknown action, rating out of range, empty ids: the drain's validation dead-letters them."""
    key = make_key(redis_client)
    bad = [{"user_interaction": {**EVENT["user_interaction"], "action": "teleport", "user_id": ""}},
           {"feedback_event": {**FEEDBACK["feedback_event"], "rating": 99}}]
    response = post(gw, key, {"events": bad})
    assert response.status_code == 202 and response.json()["accepted"] == 2


BIG = "x" * (33 * 1024)


@pytest.mark.parametrize(("body", "status", "code"), [
    (b'{"user_interaction": ', 400, "malformed_json"),
    (b'{"user_interaction": {"user_id": "\xff"}}', 400, "invalid_utf8"),
    (b"[1, 2]", 400, "not_an_object"),
    (b'"just a string"', 400, "not_an_object"),
    (b'{"a":' + b"[" * 5000 + b"]" * 5000 + b"}", 400, "too_deep"),
    (b'{"events": {"not": "a list"}}', 400, "invalid_batch"),
    (b'{"events": [], "extra": 1}', 400, "invalid_batch"),
    (b'{"events": []}', 422, "empty_batch"),
    (json.dumps({"events": [EVENT] * 501}).encode(), 413, "too_many_events"),
    (b" " * (1024 * 1024 + 1), 413, "body_too_large"),
])
def test_unreadable_bodies_are_rejected_whole(gw, redis_client, body, status, code):
    response = post(gw, make_key(redis_client), body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"]
    assert not stream_entries(redis_client)


@pytest.mark.parametrize(("event", "code"), [
    ({"listening": {"user_id": "u1"}}, "unknown_event_type"),
    ({}, "unknown_event_type"),
    ({**EVENT, **FEEDBACK}, "unknown_event_type"),
    ({**EVENT, "feedback_event": None}, "unknown_event_type"),
    ({"user_interaction": None}, "invalid_field"),
    ({"user_interaction": {**EVENT["user_interaction"], "user_id": 42}}, "invalid_field"),
    ({"user_interaction": {**EVENT["user_interaction"], "timestamp": None}}, "invalid_field"),
    ({"feedback_event": {**FEEDBACK["feedback_event"], "rating": "high"}}, "invalid_field"),
    ({"user_interaction": {**EVENT["user_interaction"], "colour": "red"}}, "invalid_field"),  # unknown field
    ({"user_interaction": "play"}, "invalid_field"),
    ({"user_interaction": {**EVENT["user_interaction"], "track_id": BIG}}, "event_too_large"),
])
def test_events_that_cannot_be_events_are_rejected_with_their_reason(gw, redis_client, event, code):
    response = post(gw, make_key(redis_client), event)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["accepted"] == 0 and body["rejected"] == 1
    assert body["results"][0]["code"] == code and body["results"][0]["reason"]
    assert not stream_entries(redis_client)


def test_missing_wrong_and_malformed_keys_get_401(gw, redis_client):
    key = make_key(redis_client)
    wrong_secret = key[: key.rindex("_") + 1] + "wrong"
    for headers, code in [({}, "missing_api_key"), (auth("ik_nope_nope"), "invalid_api_key"),
                          (auth(wrong_secret), "invalid_api_key"), (auth("not-a-key"), "invalid_api_key"),
                          ({"Authorization": f"Basic {key}"}, "missing_api_key")]:
        response = httpx.post(f"{gw.url}/v1/events", json=EVENT, headers=headers)
        assert response.status_code == 401, (headers, response.text)
        assert response.json()["error"]["code"] == code
        assert response.headers["www-authenticate"] == "Bearer"
        assert key not in response.text
    assert not stream_entries(redis_client)


def test_revoked_key_is_refused_within_the_auth_cache_window(gw, redis_client):
    key = make_key(redis_client)
    assert post(gw, key, EVENT).status_code == 202
    api_keys.revoke_key(redis_client, api_keys.split_key(key))
    refused = eventually(lambda: post(gw, key, EVENT).status_code == 401, timeout=5)
    assert refused
    assert post(gw, key, EVENT).json()["error"]["code"] == "api_key_revoked"


def test_expired_key_is_refused(gw, redis_client):
    key = make_key(redis_client, expires_in_seconds=0.3)
    time.sleep(0.4)
    response = post(gw, key, EVENT)
    assert response.status_code == 401 and response.json()["error"]["code"] == "api_key_expired"


def test_wrong_scope_is_403_per_event(gw, redis_client):
    key = make_key(redis_client, scopes=["user_interaction"])
    response = post(gw, key, FEEDBACK)
    assert response.status_code == 403
    assert response.json()["results"][0]["code"] == "forbidden_event_type"
    mixed = post(gw, key, {"events": [EVENT, FEEDBACK]})
    assert mixed.status_code == 202
    assert [r["status"] for r in mixed.json()["results"]] == ["accepted", "rejected"]
    assert not stream_entries(redis_client, "feedback_event")


RATELIMIT = re.compile(r'"events";r=(\d+);t=(\d+)')  # draft-ietf-httpapi-ratelimit-headers-11


def test_rate_limit_answers_429_with_retry_after_and_writes_nothing(gateways, redis_client):
    gw = gateways()
    key = make_key(redis_client, rate_per_second=0.5, burst=3)
    assert post(gw, key, {"events": [EVENT, EVENT]}).status_code == 202
    accepted = post(gw, key, EVENT)
    assert accepted.status_code == 202
    limited = post(gw, key, EVENT)
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "rate_limited"
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.headers["ratelimit-remaining"] == "0"
    assert {"ratelimit-limit", "ratelimit-reset"} <= set(limited.headers)
    assert sum(len(e.events) for _, e in stream_entries(redis_client)) == 3


def test_rate_limit_headers_follow_the_current_draft_and_keep_the_legacy_ones(gateways, redis_client):
    gw = gateways()
    key = make_key(redis_client, rate_per_second=0.5, burst=3)
    accepted = post(gw, key, {"events": [EVENT, EVENT, EVENT]})
    assert accepted.status_code == 202
    # a burst of 3 events, refilled at 0.5/s: 6 s from empty to full
    assert accepted.headers["ratelimit-policy"] == '"events";q=3;w=6'
    remaining, window = map(int, RATELIMIT.fullmatch(accepted.headers["ratelimit"]).groups())
    assert (remaining, window) == (0, 6)
    assert (accepted.headers["ratelimit-limit"], accepted.headers["ratelimit-remaining"],
            accepted.headers["ratelimit-reset"]) == ("3", "0", "6")

    limited = post(gw, key, EVENT)
    assert limited.status_code == 429
    assert limited.headers["ratelimit-policy"] == '"events";q=3;w=6'
    remaining, window = map(int, RATELIMIT.fullmatch(limited.headers["ratelimit"]).groups())
    # the draft: Retry-After must not end before the effective window does
    assert remaining == 0 and window == int(limited.headers["retry-after"]) >= 1


def test_a_batch_over_the_burst_gets_a_non_retryable_413(gateways, redis_client):
    gw = gateways()
    key = make_key(redis_client, rate_per_second=0.5, burst=3)
    too_big = post(gw, key, {"events": [EVENT] * 4})  # costs more than the burst: never admissible
    assert too_big.status_code == 413
    error = too_big.json()["error"]
    assert error["code"] == "batch_exceeds_burst" and error["max_events"] == 3
    assert "split" in error["message"] and "3" in error["message"]
    assert_documented(gw, too_big)  # max_events included
    assert "retry-after" not in too_big.headers  # waiting cannot help
    assert too_big.headers["ratelimit-policy"] == '"events";q=3;w=6'
    assert not stream_entries(redis_client)
    assert post(gw, key, {"events": [EVENT] * 3}).status_code == 202  # the bucket was not spent


def test_the_spec_documents_the_fields_and_meaning_of_every_error(gw):
    """The error fields beyond code and message (413's max_events, outcome_unknown's results) are in
    ErrorDetail, and the 503 does not claim that nothing was written: outcome_unknown may have."""
    spec = httpx.get(f"{gw.url}/openapi.json").json()
    schemas = spec["components"]["schemas"]
    detail = schemas["ErrorDetail"]
    assert {"code", "message", "retry_after", "max_events", "results"} <= set(detail["properties"])
    assert set(detail["required"]) == {"code", "message"}  # the others only where they apply
    assert detail["properties"]["max_events"] == {"type": "integer"}
    items = {ref["$ref"].rsplit("/", 1)[1] for ref in detail["properties"]["results"]["items"]["anyOf"]}
    assert items == {"EventUnknown", "EventRejected"}
    assert set(schemas["EventUnknown"]["required"]) == {"index", "status", "event_id"}
    responses = spec["paths"]["/v1/events"]["post"]["responses"]
    assert "`max_events`" in responses["413"]["description"]
    unavailable = responses["503"]["description"]
    assert "`outcome_unknown`" in unavailable and "may or may not have been stored" in unavailable
    assert "`results`" in unavailable and "event_id" in unavailable


def test_feedback_events_switched_off_are_rejected_per_event(gateways, redis_client):
    gw = gateways(enable_feedback_events=False)
    key = make_key(redis_client)
    response = post(gw, key, {"events": [FEEDBACK, EVENT]})
    assert response.status_code == 202
    assert response.json()["results"][0]["code"] == "feedback_events_disabled"
    assert not stream_entries(redis_client, "feedback_event")
    alone = post(gw, key, FEEDBACK)
    assert alone.status_code == 422 and alone.json()["results"][0]["code"] == "feedback_events_disabled"


def test_strict_mode_rejects_value_problems_with_every_reason(gateways, redis_client):
    gw = gateways(gateway_strict=True)
    key = make_key(redis_client)
    bad = {"user_interaction": {**EVENT["user_interaction"], "action": "teleport", "user_id": "",
                                "timestamp": "2999-01-01T00:00:00Z"}}
    now = datetime.now(timezone.utc).isoformat()
    good = {"user_interaction": {**EVENT["user_interaction"], "timestamp": now}}
    response = post(gw, key, {"events": [bad, {"feedback_event": {**FEEDBACK["feedback_event"], "rating": 9,
                                                                  "timestamp": now}}, good]})
    assert response.status_code == 202
    results = response.json()["results"]
    assert results[2]["status"] == "accepted"
    assert results[0]["code"] == "invalid_value"
    for check in ("id_length", "action_in_enum", "timestamp_not_ahead"):
        assert check in results[0]["reason"]
    assert results[1]["code"] == "invalid_value" and "rating_in_range" in results[1]["reason"]
    assert not any(e.events[0].fields.get("action") == "teleport" for _, e in stream_entries(redis_client))


def test_ops_endpoints(gw, redis_client):
    key = make_key(redis_client)
    before = httpx.get(f"{gw.url}/metrics").text
    bad_play = {"user_interaction": {**EVENT["user_interaction"], "user_id": 42}}  # wrong JSON type
    response = post(gw, key, {"events": [EVENT, bad_play, {"listening": {}}]})
    assert response.status_code == 202
    assert httpx.get(f"{gw.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{gw.url}/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    metrics = httpx.get(f"{gw.url}/metrics").text
    for name in ("gateway_requests_total", "gateway_events_total", "gateway_redis_write_seconds_bucket",
                 "gateway_backlog_entries"):
        assert name in metrics

    def added(name: str, **labels) -> float:
        return metric(metrics, name, **labels) - metric(before, name, **labels)

    assert added("gateway_events_total", event_type="user_interaction", outcome="accepted", reason="") == 1
    # a rejected event is counted under its type when the gateway could tell it, else "unknown"
    assert added("gateway_events_total", event_type="user_interaction", outcome="rejected",
                 reason="invalid_field") == 1
    assert added("gateway_events_total", event_type="unknown", outcome="rejected", reason="unknown_event_type") == 1
    assert added("gateway_requests_total", route="/v1/events", status="202") == 1
    assert added("gateway_requests_total", route="/healthz", status="200") == 1
    assert metric(metrics, "gateway_accepting") == 1  # accepting from the start, before any flip
    spec = httpx.get(f"{gw.url}/openapi.json").json()
    schemas = spec["components"]["schemas"]
    assert {"UserInteraction", "FeedbackEvent", "Batch", "IngestResponse", "ErrorResponse"} <= set(schemas)
    assert "action" in schemas["UserInteraction"]["properties"]
    docs = httpx.get(f"{gw.url}/docs")
    assert docs.status_code == 200 and "/openapi.json" in docs.text and "http" not in docs.text.split("<script>")[1]


def test_unknown_routes_and_methods_get_json_errors(gw):
    assert httpx.get(f"{gw.url}/nope").json()["error"]["code"] == "not_found"
    response = httpx.get(f"{gw.url}/v1/events")
    assert response.status_code == 405 and response.json()["error"]["code"] == "method_not_allowed"


def test_every_answer_carries_a_request_id_and_the_access_log_has_the_clients(logged_gw, redis_client):
    key = make_key(redis_client)
    sent = httpx.post(f"{logged_gw.url}/v1/events", json=EVENT, headers={**auth(key), "X-Request-ID": "client-req-42"})
    assert sent.status_code == 202 and sent.headers["x-request-id"] == "client-req-42"
    health = httpx.get(f"{logged_gw.url}/healthz", headers={"X-Request-ID": "client-health-7"})
    assert health.headers["x-request-id"] == "client-health-7"
    assert httpx.get(f"{logged_gw.url}/healthz").headers["x-request-id"]  # none sent: one is made
    insane = httpx.get(f"{logged_gw.url}/readyz", headers={"X-Request-ID": "x" * 65})
    assert insane.headers["x-request-id"] != "x" * 65  # over 64 characters: replaced
    for path in ("/metrics", "/openapi.json", "/nope"):
        assert httpx.get(f"{logged_gw.url}{path}").headers["x-request-id"], path

    def logged(request_id: str) -> dict | None:
        return next((line for line in log_lines(logged_gw) if line.get("request_id") == request_id), None)

    line = eventually(lambda: logged("client-req-42"))
    assert line and line["msg"] == "POST /v1/events" and line["status"] == 202
    line = eventually(lambda: logged("client-health-7"))
    assert line and line["msg"] == "GET /healthz" and line["status"] == 200
