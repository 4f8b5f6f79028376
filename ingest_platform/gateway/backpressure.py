"""Backpressure: a background poll of the buffer's backlog and memory, read per request for free.

Every POLL_SECONDS one pipeline reads the undrained backlog (entries added minus drained) and
Redis memory. Requests only read the resulting flag, so a request never pays for the check.
Hysteresis: once over a high-water mark, the gateway accepts again only below 90% of it, so it
does not flap at the boundary. A failed poll (or a failed write or key lookup) marks Redis
unreachable: the gateway then answers 503 at once, without waiting on Redis (writes are refused
before they are sent, keys come from the workers' caches), and the next successful poll (within
POLL_SECONDS of Redis coming back) resumes intake without a restart. How long a poll or a command
may wait for Redis is GATEWAY_REDIS_TIMEOUT_SECONDS: a frozen Redis is found out within about that.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import redis.asyncio as aioredis
import redis.exceptions

from ingest_platform.gateway import metrics
from ingest_platform.gateway.logs import log
from ingest_platform.storage.event_log import BufferState, buffer_state_async

POLL_SECONDS = 0.25
RESUME_FRACTION = 0.9


@dataclass(frozen=True)
class Refusal:
    """Why intake is paused: an error code, a message and a Retry-After in seconds."""

    code: str
    message: str
    retry_after: int


UNREACHABLE = Refusal("buffer_unavailable", "the event buffer (Redis) is unreachable; retry later", 1)
BACKLOG_FULL = Refusal("backlog_full", "the undrained backlog is over its high-water mark; retry later", 2)
MEMORY_FULL = Refusal("buffer_memory_full", "the event buffer is near its memory limit; retry later", 2)
OUT_OF_MEMORY = Refusal("buffer_memory_full", "the event buffer refused the write (out of memory); retry later", 2)


class BufferHealth:
    def __init__(self, client: aioredis.Redis, streams: list[str], backlog_high_water: int,
                 memory_high_water: float, poll_seconds: float = POLL_SECONDS):
        self.client = client
        self.streams = streams
        self.backlog_high_water = backlog_high_water
        self.memory_high_water = memory_high_water
        self.poll_seconds = poll_seconds
        self.refusal: Refusal | None = None  # None: accepting
        self.state: BufferState | None = None
        self.last_error: str | None = None
        self._task: asyncio.Task | None = None
        self._changed = asyncio.Event()

    @property
    def accepting(self) -> bool:
        return self.refusal is None

    @property
    def unreachable(self) -> bool:
        """Redis is known to be down or not answering: callers skip round trips that would only wait."""
        return self.refusal is UNREACHABLE

    async def start(self) -> None:
        await self.poll_once()
        # _set only writes the gauge on a change, and "accepting" is the initial state: without
        # this, gateway_accepting would read 0 until the first flip.
        metrics.ACCEPTING.set(1 if self.refusal is None else 0)
        self._task = asyncio.create_task(self._run(), name="buffer-health")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.poll_seconds)
            await self.poll_once()

    async def poll_once(self) -> None:
        try:
            state = await buffer_state_async(self.client, self.streams)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
            self.mark_unreachable(exc)
            return
        except redis.exceptions.RedisError as exc:  # e.g. a server still loading its AOF
            self.mark_unreachable(exc)
            return
        self.state, self.last_error = state, None
        metrics.BACKLOG.set(state.backlog)
        metrics.REDIS_UP.set(1)
        self._set(self._judge(state))

    def mark_unreachable(self, exc: BaseException) -> None:
        if self.refusal is not UNREACHABLE:
            log.warning("redis unreachable; answering 503 until it is back", extra={"error": str(exc)})
        self.last_error = str(exc) or type(exc).__name__
        metrics.REDIS_UP.set(0)
        self._set(UNREACHABLE)

    def _judge(self, state: BufferState) -> Refusal | None:
        """The refusal for `state`, with hysteresis: an active refusal holds until 90% of its mark."""
        current = self.refusal
        backlog_mark = self.backlog_high_water * (RESUME_FRACTION if current is BACKLOG_FULL else 1)
        if state.backlog >= backlog_mark:
            return BACKLOG_FULL
        if state.maxmemory:
            memory_mark = self.memory_high_water * (RESUME_FRACTION if current is MEMORY_FULL else 1)
            if state.used_memory >= state.maxmemory * memory_mark:
                return MEMORY_FULL
        return None

    def _set(self, refusal: Refusal | None) -> None:
        if refusal is not self.refusal:
            if refusal is None:
                log.info("accepting events again")
            elif refusal is not UNREACHABLE:
                log.warning("pausing intake", extra={"reason": refusal.code})
            self.refusal = refusal
            metrics.ACCEPTING.set(1 if refusal is None else 0)
            self._changed.set()
            self._changed = asyncio.Event()

    async def wait_for_change(self, timeout: float) -> None:
        """Sleep until the refusal changes or `timeout` passes (WebSocket flow control)."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)
