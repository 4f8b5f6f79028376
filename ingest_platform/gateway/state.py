"""The gateway's per-worker state and the one intake path that HTTP and WebSocket share.

`Gateway.ingest` parses a request's events, then in one Redis round trip spends the key's rate
limit and appends one stream entry per accepted event type. Only when Redis has answered are the
events reported accepted, so an acknowledgement always means "durably in the buffer".

A failed write ends in one of two ways, told apart because a client's safe next step differs:
`Unavailable` when nothing was written (intake paused, no connection, Redis refused the script), and
`OutcomeUnknown` when the write was sent but no answer came in time (a frozen or hung Redis, a
connection lost mid-flight): the events may be in the stream, or may land when Redis wakes. The
latter carries the event ids the events were sent with; writing them again with those ids
(`Gateway.retry`, or a client resending them) is exactly-once, as the drain keeps one event per
`event_id`.
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
from ingest_platform.gateway.events import (
    AcceptedResult,
    Limits,
    ParsedBatch,
    Policy,
    parse_events,
    results,
    stream_entries,
)
from ingest_platform.gateway.logs import log
from ingest_platform.settings import Settings
from ingest_platform.storage import event_log
from ingest_platform.storage.api_keys import ApiKeyRecord
from ingest_platform.storage.pipelined import NotSent, PipelinedRedis
from ingest_platform.storage.rate_limits import Admission, Admitter, RateLimit


class Unavailable(Exception):
    """The buffer cannot take events now (503 + Retry-After); nothing was written."""

    def __init__(self, refusal: Refusal):
        super().__init__(refusal.message)
        self.refusal = refusal


class OutcomeUnknown(Exception):
    """The write was sent but Redis did not answer (timeout, connection lost): the events may or
    may not be in the stream. Holds what is needed to write them again with the same event ids."""

    def __init__(self, key: ApiKeyRecord, batch: ParsedBatch, entries: list, limit: RateLimit, cost: int):
        super().__init__("the event buffer (Redis) did not answer the write in time: the events may or may "
                         "not have been stored")
        self.key, self.batch, self.entries, self.limit, self.cost = key, batch, entries, limit, cost

    def results(self) -> list:
        """Per-event results in request order: `{"index", "status": "unknown", "event_id"}` for each
        event that was sent (the id to retry it with), the rejections as in a 202."""
        return [{"index": r.index, "status": "unknown", "event_id": r.event_id} if isinstance(r, AcceptedResult)
                else r for r in results(self.batch)]

    def count(self) -> None:
        """Metrics for an answer that ends with this unknown outcome (HTTP's 503): the rejections
        as in any answer, the events that were sent under outcome "unknown", never "accepted" (they
        may not be stored; a client's retry with the ids is counted as accepted when it lands).
        A WebSocket message is not answered so: it is retried until acked, and counted then."""
        for name, n in self.batch.accepted_by_type.items():
            metrics.count_events(name, "unknown", "", n)
        for r in self.batch.rejected:
            metrics.count_events(r.event_type, "rejected", r.code)


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
        timeout = settings.gateway_redis_timeout_seconds  # a hung Redis is an error after this, not a hang
        self.redis: aioredis.Redis = event_log.connect_async(settings.effective_redis_url, timeout)
        self.health = BufferHealth(self.redis, [t.stream for t in EVENT_TYPES.values()],
                                   settings.gateway_backlog_high_water, settings.gateway_memory_high_water)
        self.auth = Authenticator(self.redis, settings.gateway_auth_failure_limit,
                                  settings.gateway_auth_failure_window_seconds, self.health)
        self.writer = PipelinedRedis.from_url(  # the hot path's connection
            settings.effective_redis_url, connect_timeout=timeout, command_timeout=timeout)
        self.admitter = Admitter(self.writer)

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
        """Parse, rate-limit and append; raises Unavailable or RateLimited with nothing written, and
        OutcomeUnknown when the write was sent but not answered."""
        self.check_accepting()
        if self.policy.strict:  # strict checks compare timestamps with the server's clock
            now = datetime.now(timezone.utc)
            batch = parse_events(raws, key.scopes, self.limits, self.policy, now)
            received_at = now.isoformat(timespec="microseconds").replace("+00:00", "Z")
        else:
            batch = parse_events(raws, key.scopes, self.limits, self.policy)
            received_at = utc_now_iso()
        entries = stream_entries(batch, received_at, key.key_id)
        limit, cost = rate_limit.limit_for(key, self.settings), max(1, batch.size)  # cost: events, at least 1
        return await self._append(key, batch, entries, limit, cost)

    async def retry(self, unknown: OutcomeUnknown) -> Outcome:
        """Write the events of an unknown outcome again, with the same event ids and stamps (a copy
        that did land meanwhile is dropped by the drain's dedup). Raises like `ingest`.

        The retry spends the key's rate limit again, so a first write that did land is charged
        twice: acceptable, as it takes a Redis that stopped answering mid-write, and it errs
        towards limiting (un-charging would need to know whether the first write ran)."""
        self.check_accepting()
        return await self._append(unknown.key, unknown.batch, unknown.entries, unknown.limit, unknown.cost)

    async def _append(self, key: ApiKeyRecord, batch: ParsedBatch, entries: list, limit: RateLimit,
                      cost: int) -> Outcome:
        """Spend `cost` of the key's limit and append `entries` in one round trip (ADMIT_LUA)."""
        started = time.perf_counter()
        try:
            admission = await self.admitter.admit(key.key_id, limit, cost, entries)
        except (redis.exceptions.RedisError, OSError) as exc:
            failure = self._write_failed(exc, OutcomeUnknown(key, batch, entries, limit, cost))
            if failure is exc:
                raise
            raise failure from exc
        metrics.observe_redis_write(time.perf_counter() - started)
        if not admission.admitted:
            raise RateLimited(limit, admission, cost)
        self._count(batch)
        return Outcome(batch, limit, admission)

    def _write_failed(self, exc: BaseException, unknown: OutcomeUnknown) -> BaseException:
        """The exception that answers a failed write (`exc` itself for a bug): whether anything may
        have been written decides."""
        if isinstance(exc, (NotSent, redis.exceptions.BusyLoadingError)):
            self.health.mark_unreachable(exc)  # never sent (no connection), or refused unrun (loading)
            return Unavailable(UNREACHABLE)
        if isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)):
            self.health.mark_unreachable(exc)  # sent, unanswered: it may have run, or run when Redis wakes
            return unknown
        if isinstance(exc, redis.exceptions.ResponseError) and str(exc).startswith("OOM"):
            return Unavailable(OUT_OF_MEMORY)  # the script's shebang makes Redis refuse it before it runs
        return exc

    @staticmethod
    def _count(batch: ParsedBatch) -> None:
        for name, n in batch.accepted_by_type.items():
            metrics.count_events(name, "accepted", "", n)
        for r in batch.rejected:
            metrics.count_events(r.event_type, "rejected", r.code)
