"""Shared pieces of the reliability suite: a gateway process whose logs we keep, and the checks
every answer of the gateway must pass (no 5xx, a machine-readable body, a live server after)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import redis

from ingest_platform.storage import api_keys
from ingest_platform_tests.conftest import GatewayProcess

# Every wait in this suite is bounded: a hang is a failure, never a stuck test.
REQUEST_TIMEOUT = 10.0

VALID_INTERACTION = {"user_interaction": {"user_id": "u1", "session_id": "s1", "track_id": "t1",
                                          "action": "play", "timestamp": "2026-11-26T10:00:00Z"}}


class LoggedGateway(GatewayProcess):
    """The gateway process with its output (the JSON logs) kept in a file."""

    def __init__(self, redis_url: str, data_dir: Path, log_path: Path, workers: int = 1, **settings):
        self.log_path = log_path
        env = dict(os.environ, REDIS_URL=redis_url, INGEST_DATA_DIR=str(data_dir))
        env.update({name.upper(): str(value) for name, value in settings.items()})
        self._log = open(log_path, "wb")
        super().__init__(env, workers, output=self._log, ready_timeout=30)

    def exit_details(self) -> str:
        return self.logs()[-2000:]

    def logs(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_bytes().decode("utf-8", "replace")

    def assert_alive_and_healthy(self) -> None:
        """The 'no crash' property: the process runs and still answers liveness and readiness."""
        assert self.process.poll() is None, f"gateway died: {self.logs()[-3000:]}"
        assert httpx.get(f"{self.url}/healthz", timeout=REQUEST_TIMEOUT).status_code == 200
        assert httpx.get(f"{self.url}/readyz", timeout=REQUEST_TIMEOUT).status_code == 200

    def stop(self) -> None:
        super().stop()
        self._log.close()


def make_key(redis_url: str, name: str = "reliability", **kwargs) -> str:
    client = redis.Redis.from_url(redis_url)
    try:
        key, _ = api_keys.create_key(client, name, **kwargs)
    finally:
        client.close()
    return key


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def check_answer(status: int, body: bytes, context: object = None) -> dict:
    """The contract of every answer to POST /v1/events: never a 5xx other than a documented 503,
    always JSON, and every rejection machine-readable.

    A rejection is either a whole-request error `{"error": {"code": ...}}` or, for a request whose
    events were each rejected (422/403, documented in docs/gateway.md), per-event results that
    each carry a `code`.
    """
    assert status < 500 or status == 503, (status, body[:500], context)
    try:
        answer = json.loads(body)
    except ValueError:
        raise AssertionError(f"not JSON: {status} {body[:300]!r} for {context!r}") from None
    assert isinstance(answer, dict), (answer, context)
    if status >= 400:
        if "error" in answer:
            assert isinstance(answer["error"].get("code"), str) and answer["error"]["code"], (answer, context)
            assert isinstance(answer["error"].get("message"), str), (answer, context)
        else:
            assert status in (403, 422), (status, answer, context)
            assert answer["accepted"] == 0 and answer["rejected"] == len(answer["results"]) > 0, answer
            assert all(r["status"] == "rejected" and r["code"] for r in answer["results"]), (answer, context)
    else:
        assert status == 202 and answer["accepted"] >= 1, (status, answer, context)
        assert len(answer["results"]) == answer["accepted"] + answer["rejected"], answer
    return answer


def check_ws_reply(reply: dict, seq: int, context: object = None) -> None:
    """The WebSocket's per-message contract: an ack or an error with a code, numbered in order."""
    assert reply.get("seq") == seq, (reply, seq, context)
    if reply["type"] == "ack":
        assert reply["accepted"] + reply["rejected"] == len(reply["results"]), reply
        assert all(r["status"] == "accepted" or r["code"] for r in reply["results"]), (reply, context)
    else:
        assert reply["type"] == "error", (reply, context)
        assert isinstance(reply["error"]["code"], str) and reply["error"]["code"], (reply, context)
        assert reply["error"]["status"] < 500, (reply, context)
