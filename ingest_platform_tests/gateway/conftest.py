"""Gateway fixtures: real gateway processes (uvicorn subprocesses) with per-test settings."""

from __future__ import annotations

import json
import os
import time

import httpx
import msgspec
import pytest
import redis

from ingest_platform.contract import StreamEntry, decode_stream_entry
from ingest_platform.gateway.openapi import ErrorResponse
from ingest_platform.storage import api_keys
from ingest_platform_tests.conftest import GatewayProcess
from ingest_platform_tests.reliability.support import LoggedGateway

EVENT = {"user_interaction": {"user_id": "u1", "session_id": "s1", "track_id": "t1", "action": "play",
                              "timestamp": "2026-11-26T11:00:00+01:00"}}
FEEDBACK = {"feedback_event": {"user_id": "u1", "recommendation_id": "r1", "feedback_type": "explicit",
                               "rating": 4.5, "timestamp": "2026-11-26T10:00:00Z"}}


def start_gateway(redis_url: str, data_dir, workers: int = 1, **settings) -> GatewayProcess:
    env = dict(os.environ, REDIS_URL=redis_url, INGEST_DATA_DIR=str(data_dir))
    env.update({name.upper(): str(value) for name, value in settings.items()})
    return GatewayProcess(env, workers)


@pytest.fixture(scope="module")
def gateways(shared_redis, tmp_path_factory):
    """start(**settings) -> a gateway process on the session's Redis (stopped with the module)."""
    started = []

    def start(redis_url: str | None = None, workers: int = 1, **settings) -> GatewayProcess:
        process = start_gateway(redis_url or shared_redis.url, tmp_path_factory.mktemp("data"), workers, **settings)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture(scope="module")
def gw(gateways) -> GatewayProcess:
    """A gateway with default settings."""
    return gateways()


@pytest.fixture(scope="module")
def logged_gw(shared_redis, tmp_path_factory):
    """A gateway with the access log on, its JSON log lines kept in a file."""
    root = tmp_path_factory.mktemp("logged")
    process = LoggedGateway(shared_redis.url, root, root / "gateway.log", gateway_access_log=True)
    yield process
    process.stop()


def log_lines(gateway: LoggedGateway) -> list[dict]:
    return [json.loads(line) for line in gateway.logs().splitlines() if line.startswith("{")]


def make_key(client: redis.Redis, **kwargs) -> str:
    key, _ = api_keys.create_key(client, "test", **kwargs)
    return key


def auth(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def post(gateway, key: str | None, body, **kwargs) -> httpx.Response:
    headers = auth(key) if key else {}
    if isinstance(body, (bytes, str)):
        return httpx.post(f"{gateway.url}/v1/events", content=body, headers=headers, **kwargs)
    return httpx.post(f"{gateway.url}/v1/events", json=body, headers=headers, **kwargs)


def stream_entries(client: redis.Redis, event_type: str = "user_interaction") -> list[tuple[str, StreamEntry]]:
    return [(i.decode(), decode_stream_entry(f))
            for i, f in client.xrange(f"ingest:events:{event_type}")]


def eventually(check, timeout: float = 10.0, interval: float = 0.05):
    """Polls `check` until it returns a truthy value (a state change, not a speed assertion)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(interval)


def metric(text: str, name: str, **labels) -> float:
    """The value of one sample of the Prometheus text `text` (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    prefix = f"{name}{{{wanted}}} " if labels else f"{name} "
    values = [float(line[len(prefix):]) for line in text.splitlines() if line.startswith(prefix)]
    return values[0] if values else 0.0


def assert_documented(gateway, response: httpx.Response) -> None:
    """An error answer of POST /v1/events is what the gateway's /openapi.json says: its status is
    listed, every field of its error is a property of ErrorDetail, and it decodes as the struct the
    schema is made from (so each field has the documented type)."""
    spec = httpx.get(f"{gateway.url}/openapi.json").json()
    assert str(response.status_code) in spec["paths"]["/v1/events"]["post"]["responses"]
    error = response.json()["error"]
    documented = spec["components"]["schemas"]["ErrorDetail"]["properties"]
    assert set(error) <= set(documented), set(error) - set(documented)
    msgspec.convert(response.json(), ErrorResponse)  # raises on a field of another type
