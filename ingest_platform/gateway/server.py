"""Running the gateway: uvicorn with N worker processes sharing one port.

Workers share nothing but Redis (rate-limit buckets, API keys, the streams), so limits and
revocations hold across them. Metrics are aggregated across workers through a per-run
PROMETHEUS_MULTIPROC_DIR when there is more than one.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from ingest_platform.settings import Settings


def run(settings: Settings, host: str | None = None, port: int | None = None, workers: int = 1) -> None:
    import uvicorn

    from ingest_platform.gateway.fastpath import GatewayHttpProtocol
    from ingest_platform.gateway.wsprotocol import GatewayWebSocketProtocol

    metrics_dir = None
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # prometheus_client reads this variable itself, in every worker: it must be set before they start.
        metrics_dir = tempfile.mkdtemp(prefix="ingest-gateway-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        uvicorn.run(
            "ingest_platform.gateway.app:app_from_env", factory=True,
            host=host or settings.gateway_host, port=port or settings.gateway_port, workers=workers,
            http=GatewayHttpProtocol,  # POST /v1/events without an ASGI cycle; bounded request heads (slowloris)
            ws=GatewayWebSocketProtocol,  # failed handshakes answered with a JSON error body
            log_level="warning", access_log=False,  # the gateway logs JSON itself; never URLs with keys
            ws_max_size=settings.max_body_bytes + 1024,  # bigger messages are closed with 1009
            backlog=4096, timeout_graceful_shutdown=5,
            proxy_headers=False, server_header=False,  # no proxy in front by default; fewer bytes per reply
        )
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
