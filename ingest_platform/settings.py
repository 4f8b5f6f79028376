"""Every environment variable the platform reads, in one place.

Nothing else in the package touches ``os.environ`` for configuration: parts receive a
``Settings`` (or values taken from it). The README's settings table is generated from the
field descriptions below, so the two cannot drift apart (``ingest-platform settings``).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    # --- where things live -------------------------------------------------------------
    redis_url: str | None = Field(
        default=None,
        description="An existing Redis (or Valkey) to use. Unset: `ingest-platform dev` starts a "
        "private server under the data dir; other commands use redis://127.0.0.1:6379/0.",
    )
    ingest_data_dir: Path = Field(
        default=Path("data"),
        description="Root of all runtime data: lake/, warehouse.duckdb, dagster_home/, redis/.",
    )

    # --- feature flags -----------------------------------------------------------------
    enable_feedback_events: bool = Field(
        default=True,
        description="Accept `feedback_event`s. Off: the gateway rejects each one with reason "
        "`feedback_events_disabled`; nothing is enqueued.",
    )
    enable_realtime_processing: bool = Field(
        default=True,
        description="Drain streams with a sensor every DRAIN_INTERVAL_SECONDS. Off: a schedule "
        "drains every DRAIN_SCHEDULE_MINUTES instead; nothing is lost either way.",
    )
    enable_event_enrichment: bool = Field(
        default=True,
        description="Build enriched events with user/track/session context. Off: downstream "
        "assets read the un-enriched events.",
    )
    enable_dlq_handling: bool = Field(
        default=True,
        description="Route rows that fail validation to `dead_letter_events`. Off: a batch with "
        "invalid rows fails loudly and its entries stay in Redis until handled.",
    )

    # --- gateway -----------------------------------------------------------------------
    gateway_host: str = Field(default="127.0.0.1", description="Gateway bind address.")
    gateway_port: int = Field(default=8000, description="Gateway port.")
    gateway_strict: bool = Field(
        default=False,
        description="Reject value-level problems (unknown action, rating out of range, ...) at "
        "the gateway with 422 instead of sending them to the dead-letter queue.",
    )
    max_batch_events: int = Field(default=500, description="Most events in one request.")
    max_body_bytes: int = Field(default=1024 * 1024, description="Largest request body.")
    max_event_bytes: int = Field(default=32 * 1024, description="Largest single event.")
    gateway_rate_per_second: float = Field(
        default=20_000, gt=0,
        description="Default per-key rate limit in events per second (a request costs its number of "
        "events, at least 1); shared by every gateway worker through Redis. Keys may override it.",
    )
    gateway_rate_burst: int = Field(
        default=40_000, ge=1, description="Default per-key burst: events a key may send at once above the rate."
    )
    gateway_backlog_high_water: int = Field(
        default=1_000_000, ge=1,
        description="Undrained stream entries at which the gateway answers 503 + Retry-After (and pauses "
        "WebSocket reads) until the drain catches up below 90% of it.",
    )
    gateway_memory_high_water: float = Field(
        default=0.9, gt=0, le=1,
        description="Fraction of Redis maxmemory at which the gateway answers 503 + Retry-After.",
    )
    gateway_ws_idle_seconds: float = Field(
        default=60, gt=0, description="A WebSocket that sends nothing for this long is closed (code 1001)."
    )
    gateway_access_log: bool = Field(
        default=False, description="Log every request as a JSON line (off: only errors, 503s and startup)."
    )

    gateway_header_timeout_seconds: float = Field(
        default=10,
        description="A connection must send a request's complete head (request line and headers) "
        "within this long, else 408 `header_timeout` and the connection is closed (slowloris guard).",
    )
    gateway_body_timeout_seconds: float = Field(
        default=30,
        description="A request body must arrive completely within this long of its head, else 408 "
        "`body_timeout` and the connection is closed.",
    )
    gateway_max_header_bytes: int = Field(
        default=64 * 1024,
        description="Largest request head (request line and headers); larger: 431 `headers_too_large`.",
    )

    gateway_auth_failure_limit: int = Field(
        default=20,
        description="Invalid API keys one client address may send per window; beyond that every "
        "request from it gets 429 `too_many_auth_failures` (right key or not) until the window ends. "
        "0 switches it off (behind a proxy, where every client shares the proxy's address).",
    )
    gateway_auth_failure_window_seconds: float = Field(
        default=60, description="The window of GATEWAY_AUTH_FAILURE_LIMIT, from the first failure."
    )
    gateway_redis_timeout_seconds: float = Field(
        default=2.0, gt=0,
        description="How long the gateway waits for Redis to accept a connection or answer a command "
        "before taking it as unreachable (503 until a background check sees it again); a write is "
        "given up between 1 and 1.25 times this long after it was sent (one timer checks four times "
        "per timeout) and answered 503 `outcome_unknown` with its event ids. "
        "Keep it above Redis's slowest write (an fsync with appendfsync always on a busy disk).",
    )

    # --- drain -------------------------------------------------------------------------
    drain_interval_seconds: int = Field(
        default=5, description="Sensor interval while realtime processing is on."
    )
    drain_schedule_minutes: int = Field(
        default=5, description="Schedule cadence while realtime processing is off."
    )
    drain_max_entries: int = Field(
        default=20_000,
        description="Most stream entries one drain reads (memory is O(this), never O(backlog)).",
    )
    drain_retention_hours: float = Field(
        default=24,
        description="Drained entries stay in Redis this long for `ingest-platform replay`; they are "
        "trimmed (XTRIM MINID) only once older than this AND below the committed drain cursor, "
        "never before their Parquet file is durable.",
    )
    compaction_grace_minutes: float = Field(
        default=10,
        description="An ingestion hour is compacted (its small files rewritten into few large ones) "
        "this long after it closes, once every stream feeding it is drained past it.",
    )
    compaction_target_rows: int = Field(
        default=2_000_000, description="Most rows in one compacted file."
    )
    retired_files_grace_minutes: float = Field(
        default=15,
        description="Files replaced by compaction stay readable (under lake/.pinned/) this long, "
        "for queries and warehouse connections opened before the swap.",
    )
    maintenance_interval_seconds: int = Field(
        default=60, description="How often the lake maintenance sensor compacts, trims and cleans."
    )

    # --- data quality (validation, dead letters) ---------------------------------------------
    max_event_ahead_seconds: int = Field(
        default=300,
        description="A `timestamp` more than this far ahead of the event's `received_at` is a "
        "dead letter (client clock skew).",
    )
    max_event_age_hours: int = Field(
        default=720,
        description="A `timestamp` older than this, measured back from the event's `received_at` "
        "(never from now, so a retried drain decides the same way), is a dead letter.",
    )
    dead_letter_rate_warn: float = Field(
        default=0.01,
        description="The `dead_letter_rate` asset check warns when more than this share of a "
        "batch's events of one type are dead letters.",
    )
    dead_letter_rate_fail: float = Field(
        default=0.10,
        description="The `dead_letter_rate` asset check fails when more than this share of a "
        "batch's events of one type are dead letters.",
    )

    # --- downstream (enrichment, aggregates, features) -----------------------------------
    downstream_refresh_cron: str = Field(
        default="*/5 * * * *",
        description="Cadence (cron, UTC) at which downstream assets whose inputs changed are rebuilt: "
        "the hour in progress at most this often, a closed hour once more after its last change.",
    )
    downstream_lookback_hours: int = Field(
        default=48,
        description="Hour/day partitions older than this are not rebuilt automatically (late data "
        "for them is handled by the late_events sensor; backfills from the UI or CLI).",
    )

    # --- Dagster UI ----------------------------------------------------------------------
    dagster_ui_host: str = Field(default="127.0.0.1", description="Dagster webserver bind address.")
    dagster_ui_port: int = Field(default=3000, description="Dagster webserver port.")

    @property
    def data_dir(self) -> Path:
        return self.ingest_data_dir.resolve()

    @property
    def lake_dir(self) -> Path:
        return self.data_dir / "lake"

    @property
    def warehouse_path(self) -> Path:
        return self.data_dir / "warehouse.duckdb"

    @property
    def dagster_home(self) -> Path:
        return self.data_dir / "dagster_home"

    @property
    def effective_redis_url(self) -> str:
        return self.redis_url or "redis://127.0.0.1:6379/0"


def settings_table() -> list[tuple[str, str, str]]:
    """(ENV_VAR, default, description) for every setting, in declaration order."""
    rows = []
    for name, info in Settings.model_fields.items():
        default = "unset" if info.default is None else str(info.default).lower() if isinstance(info.default, bool) \
            else str(info.default)
        rows.append((name.upper(), default, info.description or ""))
    return rows


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
