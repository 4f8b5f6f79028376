"""`ingest-platform dev` as a user runs it: the real daemon's sensor lands an event, Ctrl-C leaves
no process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import psutil

from ingest_platform.storage.redis_server import free_port

EVENT = {"user_interaction": {"user_id": "dev-stack-user", "session_id": "s1", "track_id": "t1",
                              "action": "play", "timestamp": "2026-11-26T10:00:00Z"}}


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _get(url: str) -> int | None:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.TransportError:
        return None


def _count(env: dict[str, str]) -> int:
    result = subprocess.run(
        [sys.executable, "-m", "ingest_platform.cli", "sql", "--format", "csv",
         "select count(*) as n from user_interactions where user_id = 'dev-stack-user'"],
        env=env, capture_output=True, text=True,
    )
    return int(result.stdout.splitlines()[-1]) if result.returncode == 0 else 0


UI_QUERY = """
{ workspaceOrError { ... on Workspace { locationEntries { locationOrLoadError { ... on RepositoryLocation {
    repositories { sensors { name sensorState { status } } assetNodes { assetKey { path } } } } } } } }
  assetOrError(assetKey: {path: ["user_interactions"]}) {
    ... on Asset { assetMaterializations(limit: 5) { partition } } } }
"""


def _ui_state(ui_port: int) -> dict:
    response = httpx.post(f"http://127.0.0.1:{ui_port}/graphql", json={"query": UI_QUERY}, timeout=10)
    data = response.json()["data"]
    repository = data["workspaceOrError"]["locationEntries"][0]["locationOrLoadError"]["repositories"][0]
    return {
        "sensors": {s["name"]: s["sensorState"]["status"] for s in repository["sensors"]},
        "assets": {"/".join(n["assetKey"]["path"]) for n in repository["assetNodes"]},
        "materialized_partitions": [m["partition"] for m in data["assetOrError"]["assetMaterializations"]],
    }


def test_dev_stack_lands_an_event_and_stops_every_child(tmp_path):
    gateway_port, ui_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env["INGEST_DATA_DIR"] = str(tmp_path / "data")
    stack = subprocess.Popen(
        [sys.executable, "-m", "ingest_platform.cli", "dev", "--no-traffic",
         "--gateway-port", str(gateway_port), "--ui-port", str(ui_port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    descendants: list[psutil.Process] = []
    try:
        key = stack.stdout.readline().strip()  # stdout carries only the dev key
        assert key.startswith("ik_"), (key, stack.stderr.read() if stack.poll() is not None else "")
        _wait_for(lambda: _get(f"http://127.0.0.1:{gateway_port}/healthz") == 200, 60, "the gateway")
        _wait_for(lambda: _get(f"http://127.0.0.1:{ui_port}/server_info") == 200, 90, "the Dagster UI")
        descendants = psutil.Process(stack.pid).children(recursive=True)
        assert len(descendants) >= 4  # redis, gateway, daemon, webserver (+ their code servers)

        response = httpx.post(f"http://127.0.0.1:{gateway_port}/v1/events", json=EVENT,
                              headers={"Authorization": f"Bearer {key}"})
        assert response.status_code == 202, response.text
        _wait_for(lambda: _count(env) == 1, 60, "the event in DuckDB")

        ui = _wait_for(lambda: (state := _ui_state(ui_port))["materialized_partitions"] and state, 30,
                       "the materialisation in the Dagster UI")
        assert ui["sensors"]["drain_event_streams"] == "RUNNING"
        assert {"user_interactions", "feedback_events", "dead_letter_events"} <= ui["assets"]
        this_hour = time.strftime("%Y-%m-%d-%H:00", time.gmtime())
        assert ui["materialized_partitions"][0] in {this_hour, time.strftime("%Y-%m-%d-%H:00", time.gmtime(time.time() - 60))}
    finally:
        descendants = descendants or psutil.Process(stack.pid).children(recursive=True)
        stack.send_signal(signal.SIGINT)
        stack.wait(60)
    assert stack.returncode == 0, stack.stderr.read()
    _, alive = psutil.wait_procs(descendants, timeout=10)
    assert alive == [], f"left behind: {[p.info for p in alive]}"
