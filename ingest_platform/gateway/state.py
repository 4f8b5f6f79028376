"""The gateway's per-worker state and the one intake path that HTTP and WebSocket share.

`Gateway.ingest` parses a request's events, then in one Redis round trip spends the key's rate
limit and appends one stream entry per accepted event type. Only when Redis has answered are the
events reported accepted, so an acknowledgement always means "durably in the buffer".
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import datetime, timezone

import msgspec
import redis.asyncio as aioredis
import redis.exceptions

from ingest_platform.contract import EVENT_TYPES
from ingest_platform.gateway import metrics, rate_limit
from ingest_platform.gateway.auth import Authenticator
from ingest_platform.gateway.backpressure import OUT_OF_MEMORY, UNREACHABLE, BufferHealth, Refusal
from ingest_platform.gateway.events import Limits, ParsedBatch, Policy, parse_events, stream_entries
from ingest_platform.gateway.logs import log
from ingest_platform.settings import Settings
from ingest_platform.storage import event_log
from ingest_platform.storage.api_keys import ApiKeyRecord
from ingest_platform.storage.pipelined import PipelinedRedis
from ingest_platform.storage.rate_limits import Admission, Admitter, RateLimit


class Unavailable(Exception):
    """The buffer cannot take events now (503 + Retry-After); nothing was written."""

    def __init__(self, refusal: Refusal):
        super().__init__(refusal.message)
        self.refusal = refusal


class RateLimited(Exception):
    """The key's bucket lacks the request's cost (429 + Retry-After); nothing was written."""

    def __init__(self, limit: RateLimit, admission: Admission, cost: int):
        super().__init__(f"rate limit of {limit.per_second:g} events/s (burst {limit.burst}) exceeded")
        self.limit, self.admission, self.cost = limit, admission, cost

    @property
    def retry_after(self) -> float:
        if self.cost > self.limit.burst:
            return math.inf
        return self.admission.retry_after


@dataclass
class Outcome:
    batch: ParsedBatch
    limit: RateLimit
    admission: Admission


_second, _second_text = -1, ""


def utc_now_iso() -> str:
    """Now as `2026-11-26T10:00:00.123456Z`, like datetime.isoformat() but a quarter of its cost:
    the text up to the second is made once per second."""
    global _second, _second_text
    second, micros = divmod(time.time_ns() // 1000, 1_000_000)
    if second != _second:
        _second, _second_text = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
    return f"{_second_text}.{micros:06d}Z"


class Gateway:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.limits = Limits(settings.max_batch_events, settings.max_event_bytes, settings.max_body_bytes)
        enabled = {"user_interaction"} | ({"feedback_event"} if settings.enable_feedback_events else set())
        self.policy = Policy(frozenset(enabled), strict=settings.gateway_strict)
        self.redis: aioredis.Redis = event_log.connect_async(settings.effective_redis_url)
        self.auth = Authenticator(self.redis, settings.gateway_auth_failure_limit,
                                  settings.gateway_auth_failure_window_seconds)
        self.writer = PipelinedRedis.from_url(settings.effective_redis_url)  # the hot path's connection
        self.admitter = Admitter(self.writer)
        self.health = BufferHealth(self.redis, [t.stream for t in EVENT_TYPES.values()],
                                   settings.gateway_backlog_high_water, settings.gateway_memory_high_water)

    async def start(self) -> None:
        await self.health.start()
        self._warn_about_eviction()

    async def stop(self) -> None:
        metrics.flush()
        await self.health.stop()
        await self.writer.close()
        await self.redis.aclose()

    def _warn_about_eviction(self) -> None:
        state = self.health.state
        if state is not None and state.eviction_policy and state.eviction_policy != "noeviction":
            log.warning(
                "Redis maxmemory-policy is not noeviction: Redis may evict undrained events under "
                "memory pressure; set `maxmemory-policy noeviction`",
                extra={"maxmemory_policy": state.eviction_policy},
            )

    def check_accepting(self) -> None:
        if self.health.refusal is not None:
            raise Unavailable(self.health.refusal)

    async def ingest(self, key: ApiKeyRecord, raws: list[msgspec.Raw]) -> Outcome:
        """Parse, rate-limit and append; raises Unavailable or RateLimited with nothing written."""
        self.check_accepting()
        if self.policy.strict:  # strict checks compare timestamps with the server's clock
            now = datetime.now(timezone.utc)
            batch = parse_events(raws, key.scopes, self.limits, self.policy, now)
            received_at = now.isoformat(timespec="microseconds").replace("+00:00", "Z")
        else:
            batch = parse_events(raws, key.scopes, self.limits, self.policy)
            received_at = utc_now_iso()
        entries = stream_entries(batch, received_at, key.key_id)
        limit = rate_limit.limit_for(key, self.settings)
        cost = max(1, batch.size)
        started = time.perf_counter()
        try:
            admission = await self.admitter.admit(key.key_id, limit, cost, entries)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
            self.health.mark_unreachable(exc)
            raise Unavailable(UNREACHABLE) from exc
        except redis.exceptions.ResponseError as exc:
            if str(exc).startswith("OOM"):
                raise Unavailable(OUT_OF_MEMORY) from exc
            raise
        metrics.observe_redis_write(time.perf_counter() - started)
        if not admission.admitted:
            raise RateLimited(limit, admission, cost)
        self._count(batch)
        return Outcome(batch, limit, admission)

    @staticmethod
    def _count(batch: ParsedBatch) -> None:
        for name, n in batch.accepted_by_type.items():
            metrics.count_events(name, "accepted", "", n)
        for r in batch.rejected:
            metrics.count_events("", "rejected", r.code)
