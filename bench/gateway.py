"""Gateway speed: the real gateway (auth, rate limit, validation, metrics on) beside a naive
Starlette + redis.asyncio endpoint, in the same run, on a private Redis (AOF everysec).

    .venv/bin/python -m bench.gateway [--duration 10] [--workers 2] [--connections 64]
                                      [--scenarios single,batch,ws] [--batch-sizes 100,500]

Load comes from `wrk` when it is on PATH (`apt-get install -y wrk`), else from a small asyncio
HTTP/1.1 keep-alive client in this file (slower: it competes harder for the same cores, so its
figures are lower bounds). The WebSocket load is an asyncio `websockets` client.

Targets (issue 3): single events >= 15k req/s with p99 < 20 ms; batches of 100-500 >= 250k
events/s; WebSocket >= 100k events/s over a handful of connections.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import msgspec

from bench import cpu_model

ROOT = Path(__file__).resolve().parent.parent
EVENT = {"user_interaction": {"user_id": "u123", "session_id": "s456", "track_id": "t789", "action": "play",
                              "timestamp": "2026-11-26T10:00:00Z"}}


# --- the naive baseline (what the issue measured: one XADD per event through redis.asyncio) -----


def naive_app():
    """Starlette + msgspec decode + redis.asyncio: one XADD per request, a pipeline per batch."""
    import msgspec
    import redis.asyncio as aioredis
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from ingest_platform.contract import UserInteraction

    client = aioredis.Redis.from_url(os.environ["REDIS_URL"])
    single = msgspec.json.Decoder(dict[str, UserInteraction])
    batch = msgspec.json.Decoder(dict[str, list[msgspec.Raw]])

    async def post(request: Request):
        body = await request.body()
        if body.startswith(b'{"events"'):
            raws = batch.decode(body)["events"]
            async with client.pipeline(transaction=False) as pipe:
                for raw in raws:
                    single.decode(raw)
                    pipe.xadd("naive:events", {"entry": bytes(raw)})
                await pipe.execute()
            return JSONResponse({"accepted": len(raws)}, status_code=202)
        single.decode(body)
        await client.xadd("naive:events", {"entry": body})
        return JSONResponse({"accepted": 1}, status_code=202)

    return Starlette(routes=[Route("/v1/events", post, methods=["POST"])])


# --- processes -------------------------------------------------------------------------------


def _free_port() -> int:
    from ingest_platform.storage.redis_server import free_port

    return free_port()


class Server:
    def __init__(self, name: str, args: list[str], env: dict[str, str]):
        self.name, self.port = name, _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen([sys.executable, *args, "--port", str(self.port)], env=env, cwd=ROOT,
                                        start_new_session=True, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.post(f"{self.url}/v1/events", content=b"{}", timeout=1)
                return
            except httpx.TransportError:
                time.sleep(0.2)
        raise RuntimeError(f"{name} did not start")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


# --- load ------------------------------------------------------------------------------------


@dataclass
class Result:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    events_per_request: int
    requests: int = 0
    cpu: dict[str, float] | None = None  # CPU seconds spent by "server", "redis", "load generator"

    @property
    def events_per_s(self) -> float:
        return self.requests_per_s * self.events_per_request

    def cpu_us_per_event(self, part: str) -> float:
        return self.cpu[part] / max(1, self.requests * self.events_per_request) * 1e6

    def projected_events_per_s(self, cores: int) -> float:
        """What `cores` idle cores could do at the CPU cost per event measured here (contention-robust)."""
        per_event = sum(self.cpu.values()) / max(1, self.requests * self.events_per_request)
        return cores / per_event if per_event else 0.0


WRK_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"
wrk.body = [==[{body}]==]
"""


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


def load_wrk(url: str, key: str, body: bytes, events: int, duration: float, connections: int) -> Result:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_LUA.format(key=key, body=body.decode()))
    try:
        out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{int(duration)}s", "--latency", "-s",
                              script.name, f"{url}/v1/events"], capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(script.name)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(bad.group(1)) if bad else 0) + (sum(map(int, socket_errors.groups())) if socket_errors else 0)
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    return Result(rps, p50, p99, errors, events, requests)


async def _raw_http_load(host: str, port: int, request: bytes, duration: float, connections: int):
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + duration

    async def one_connection():
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, port)
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if not head.startswith(b"HTTP/1.1 2"):
                errors += 1
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(one_connection() for _ in range(connections)))
    return latencies, errors, time.perf_counter() - started


def load_python(url: str, key: str, body: bytes, events: int, duration: float, connections: int) -> Result:
    host, port = url.removeprefix("http://").split(":")
    request = (f"POST /v1/events HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    latencies, errors, elapsed = asyncio.run(_raw_http_load(host, int(port), request, duration, connections))
    latencies.sort()
    return Result(len(latencies) / elapsed, latencies[len(latencies) // 2] * 1000,
                  latencies[int(len(latencies) * 0.99)] * 1000, errors, events, len(latencies))


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and all its children (uvicorn workers)."""
    import psutil

    root = psutil.Process(pid)
    total = 0.0
    for process in [root, *root.children(recursive=True)]:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def _own_cpu() -> float:
    import resource

    children, me = resource.getrusage(resource.RUSAGE_CHILDREN), resource.getrusage(resource.RUSAGE_SELF)
    return children.ru_utime + children.ru_stime + me.ru_utime + me.ru_stime


def load(server: "Server", redis_pid: int, key: str, body: bytes, events: int, duration: float,
         connections: int) -> Result:
    """One measurement, with the CPU each party spent on it (so contention can be factored out)."""
    runner = load_wrk if shutil.which("wrk") else load_python
    before = (_cpu_seconds(server.process.pid), _cpu_seconds(redis_pid), _own_cpu())
    result = runner(server.url, key, body, events, duration, connections)
    after = (_cpu_seconds(server.process.pid), _cpu_seconds(redis_pid), _own_cpu())
    result.cpu = dict(zip(("server", "redis", "load generator"), (b - a for a, b in zip(before, after))))
    return result


async def _ws_load(url: str, key: str, batch: int, duration: float, connections: int, window: int):
    from websockets.asyncio.client import connect

    message = json.dumps({"events": [EVENT] * batch})
    acked = 0
    stop_at = time.perf_counter() + duration

    async def one_connection():
        nonlocal acked
        async with connect(url.replace("http://", "ws://") + "/v1/events/ws",
                           additional_headers={"Authorization": f"Bearer {key}"}, max_size=None) as ws:
            in_flight = 0
            while time.perf_counter() < stop_at or in_flight:
                while in_flight < window and time.perf_counter() < stop_at:
                    await ws.send(message)
                    in_flight += 1
                reply = msgspec.json.decode(await ws.recv())
                if reply.get("type") == "ack":
                    acked += reply["accepted"]
                    in_flight -= 1

    started = time.perf_counter()
    await asyncio.gather(*(one_connection() for _ in range(connections)))
    return acked / (time.perf_counter() - started)


# --- the run ---------------------------------------------------------------------------------


def machine() -> str:
    load1, load5, _ = os.getloadavg()
    return f"{os.cpu_count()} cores, {cpu_model()}, load average {load1:.2f}/{load5:.2f} at start"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10, help="seconds per measurement")
    parser.add_argument("--workers", type=int, default=2, help="worker processes of each server")
    parser.add_argument("--connections", type=int, default=64, help="HTTP connections")
    parser.add_argument("--scenarios", default="single,batch,ws")
    parser.add_argument("--batch-sizes", default="100,500")
    parser.add_argument("--ws-connections", type=int, default=4)
    parser.add_argument("--ws-batch", type=int, default=100, help="events per WebSocket message")
    args = parser.parse_args(argv)
    scenarios = set(args.scenarios.split(","))

    from ingest_platform.storage import api_keys
    from ingest_platform.storage.redis_server import RedisServer

    import redis

    print(f"machine: {machine()}")
    print(f"load generator: {'wrk' if shutil.which('wrk') else 'python asyncio client (wrk not on PATH)'}; "
          f"{args.workers} workers per server; {args.duration:g}s per figure")
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp:
        server = RedisServer(directory=Path(tmp) / "redis").start()
        client = redis.Redis.from_url(server.url)
        key, _ = api_keys.create_key(client, "bench", rate_per_second=1e9, burst=10**9)
        env = dict(os.environ, REDIS_URL=server.url, INGEST_DATA_DIR=str(Path(tmp) / "data"),
                   GATEWAY_BACKLOG_HIGH_WATER=str(10**9))
        workers = ["--workers", str(args.workers)]
        naive = Server("naive", ["-m", "uvicorn", "bench.gateway:naive_app", "--factory", "--log-level", "warning",
                                 "--no-access-log", *workers], env)
        gateway = Server("gateway", ["-m", "ingest_platform.cli", "gateway", *workers], env)
        try:
            rows = []
            single = json.dumps(EVENT).encode()
            if "single" in scenarios:
                base = load(naive, server.process.pid, key, single, 1, args.duration, args.connections)
                ours = load(gateway, server.process.pid, key, single, 1, args.duration, args.connections)
                rows.append(("single event (req/s)", base, ours, "requests_per_s", ">= 15k, p99 < 20 ms"))
            if "batch" in scenarios:
                for size in map(int, args.batch_sizes.split(",")):
                    body = json.dumps({"events": [EVENT] * size}).encode()
                    connections = min(args.connections, 16)
                    base = load(naive, server.process.pid, key, body, size, args.duration, connections)
                    ours = load(gateway, server.process.pid, key, body, size, args.duration, connections)
                    rows.append((f"batch of {size} (events/s)", base, ours, "events_per_s", ">= 250k"))
            for label, base, ours, attr, target in rows:
                b, o = getattr(base, attr), getattr(ours, attr)
                print(f"{label:26} gateway {o:>10,.0f} (p50 {ours.p50_ms:.1f} ms, p99 {ours.p99_ms:.1f} ms, "
                      f"errors {ours.errors})  naive {b:>10,.0f} (p99 {base.p99_ms:.1f} ms, errors {base.errors})  "
                      f"ratio {o / b:.2f}x  target {target}")
                for name, result in (("gateway", ours), ("naive", base)):
                    print(f"{'':26}   {name} CPU per event: server {result.cpu_us_per_event('server'):.1f} us, "
                          f"redis {result.cpu_us_per_event('redis'):.1f} us, load generator "
                          f"{result.cpu_us_per_event('load generator'):.1f} us -> on {os.cpu_count()} idle cores "
                          f"~{result.projected_events_per_s(os.cpu_count()):,.0f} events/s")
            if "ws" in scenarios:
                before = (_cpu_seconds(gateway.process.pid), _cpu_seconds(server.process.pid), _own_cpu())
                started = time.perf_counter()
                rate = asyncio.run(_ws_load(gateway.url, key, args.ws_batch, args.duration, args.ws_connections, 4))
                events = rate * (time.perf_counter() - started)
                after = (_cpu_seconds(gateway.process.pid), _cpu_seconds(server.process.pid), _own_cpu())
                server_us, redis_us, client_us = ((b - a) / max(1, events) * 1e6 for a, b in zip(before, after))
                baseline = next((r[1].events_per_s for r in rows if r[0].startswith("batch of 100")), None)
                versus = f"  vs naive HTTP batch of 100: {rate / baseline:.2f}x" if baseline else ""
                print(f"{'websocket (events/s)':26} gateway {rate:>10,.0f} ({args.ws_connections} connections, "
                      f"{args.ws_batch} events/message, acked after XADD){versus}  target >= 100k")
                print(f"{'':26}   gateway CPU per event: server {server_us:.1f} us, redis {redis_us:.1f} us, "
                      f"python client {client_us:.1f} us -> server + redis alone on {os.cpu_count()} idle cores "
                      f"~{os.cpu_count() / ((server_us + redis_us) / 1e6):,.0f} events/s")
        finally:
            gateway.stop()
            naive.stop()
            client.close()
            server.stop()


if __name__ == "__main__":
    main()
