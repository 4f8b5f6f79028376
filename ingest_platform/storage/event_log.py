"""The Redis Streams log: append, read a fixed range, drain cursors, backlog.

Every event type has its own stream (see `contract.EventType.stream`). The drain's position is a
committed cursor per stream plus at most one *planned* range: a drain first records the exact id
range it is about to write, then writes, then commits. A drain that dies in between finds the same
plan next time and rewrites the same files, so retries and racing drains are idempotent.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis
import redis.asyncio as aioredis

from ingest_platform.settings import Settings

CURSORS_KEY = "ingest:drain:cursor"  # hash: stream -> last committed id
PLANS_KEY = "ingest:drain:plan"  # hash: stream -> "start end" (start = cursor when planned)
DRAINED_KEY = "ingest:drain:drained"  # hash: stream -> entries committed so far (for backlog)
ZERO_ID = "0-0"

# Returns {cursor, planned end or ""}. With ARGV[2] (a proposed end) and ARGV[3] (the cursor the
# caller read from), records the plan only if the cursor has not moved and no plan exists.
_PLAN_LUA = """
local cursor = redis.call('HGET', KEYS[1], ARGV[1]) or '0-0'
local plan = redis.call('HGET', KEYS[2], ARGV[1])
if plan then
  local s, e = string.match(plan, '^(%S+) (%S+)$')
  if s == cursor then return {cursor, e} end
end
if ARGV[2] == '' or ARGV[3] ~= cursor then return {cursor, ''} end
redis.call('HSET', KEYS[2], ARGV[1], cursor .. ' ' .. ARGV[2])
return {cursor, ARGV[2]}
"""

# Moves the cursor from start to end only if it is still at start (compare-and-set).
_COMMIT_LUA = """
local cursor = redis.call('HGET', KEYS[1], ARGV[1]) or '0-0'
if cursor ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('HINCRBY', KEYS[3], ARGV[1], ARGV[4])
if redis.call('HGET', KEYS[2], ARGV[1]) == ARGV[2] .. ' ' .. ARGV[3] then
  redis.call('HDEL', KEYS[2], ARGV[1])
end
return 1
"""


# The id of the ARGV[2]-th entry from ARGV[1] on (or of the last one if fewer): for a backlog larger
# than one range. The entries are read inside Redis, never sent to the caller.
_NTH_AFTER_LUA = """
local entries = redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', ARGV[2])
if #entries == 0 then return false end
return entries[#entries][1]
"""


@dataclass(frozen=True)
class StreamRange:
    """Entries (start, end] of one stream: start exclusive, end inclusive."""

    stream: str
    start: str
    end: str


def entry_ms(entry_id: str | bytes) -> int:
    """Milliseconds since the epoch at which Redis stored the entry (its ingestion time)."""
    if isinstance(entry_id, bytes):
        entry_id = entry_id.decode()
    return int(entry_id.split("-", 1)[0])


def entry_order(entry_id: str) -> tuple[int, int]:
    """Sort key of a stream entry id "<ms>-<seq>" (ids compare as numbers, not as text)."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def connect(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=2, health_check_interval=30)


# The gateway passes its setting; the default is that setting's, so the two cannot drift apart.
DEFAULT_REDIS_TIMEOUT = Settings.model_fields["gateway_redis_timeout_seconds"].default


def connect_async(url: str, timeout: float = DEFAULT_REDIS_TIMEOUT) -> aioredis.Redis:
    """An asyncio client for the gateway: a Redis that does not answer within `timeout` seconds
    (connecting or replying) is an error, never a request hanging on it."""
    return aioredis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)


def append_entries_sync(client: redis.Redis, entries: list[tuple[str, dict[bytes, bytes]]]) -> list[str]:
    """XADD each (stream, entry fields) in one round trip; returns the entry ids in order. For replay
    tools and tests: the gateway appends through its own pipelined client (gateway/state.py)."""
    pipe = client.pipeline(transaction=False)
    for stream, fields in entries:
        pipe.xadd(stream, fields)
    return [i.decode() if isinstance(i, bytes) else i for i in pipe.execute()]


class DrainLog:
    """Cursor, plan and range reads of the streams, for one drain process."""

    def __init__(self, client: redis.Redis):
        self.client = client
        self._plan = client.register_script(_PLAN_LUA)
        self._commit = client.register_script(_COMMIT_LUA)
        self._nth_after = client.register_script(_NTH_AFTER_LUA)

    def cursor(self, stream: str) -> str:
        value = self.client.hget(CURSORS_KEY, stream)
        return value.decode() if value else ZERO_ID

    def cursors(self) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in self.client.hgetall(CURSORS_KEY).items()}

    def plan_next_range(self, stream: str, max_entries: int) -> StreamRange | None:
        """The range the next drain of `stream` must write: an unfinished plan, or a new one."""
        cursor, planned_end = (v.decode() for v in self._plan(keys=[CURSORS_KEY, PLANS_KEY], args=[stream, "", ""]))
        if planned_end:
            return StreamRange(stream, cursor, planned_end)
        proposed = self._proposed_end(stream, cursor, max_entries)
        if proposed is None:
            return None
        start, end = (v.decode() for v in self._plan(keys=[CURSORS_KEY, PLANS_KEY], args=[stream, proposed, cursor]))
        if start != cursor or not end:
            return None  # another drain committed meanwhile; the next tick picks up from there
        return StreamRange(stream, start, end)

    def _proposed_end(self, stream: str, cursor: str, max_entries: int) -> str | None:
        """The id of the `max_entries`-th entry after `cursor`, or of the last one if fewer wait.

        Found without sending the entries here: the range is read once, by the drain. Usually the
        backlog (entries added minus drained, as `lag` counts it) fits, and the end is simply the
        stream's last entry; otherwise a script walks the entries inside Redis."""
        # The counter first: if a commit lands in between, the backlog only looks larger than it is
        # (the exact path below). The stream's own figures in one transaction (one key: also on a
        # cluster), so the entries counted are exactly those up to the last id.
        drained = self.client.hget(DRAINED_KEY, stream)
        pipe = self.client.pipeline(transaction=True)
        pipe.xinfo_stream(stream)
        pipe.xrevrange(stream, count=1)
        try:
            info, last = pipe.execute()
        except redis.ResponseError:  # no such stream yet
            return None
        if not last or entry_order(last[0][0].decode()) <= entry_order(cursor):
            return None
        backlog = int(info.get("entries-added", info.get("length", 0))) - int(drained or 0)
        if 0 < backlog <= max_entries:
            return last[0][0].decode()
        end = self._nth_after(keys=[stream], args=[f"({cursor}", max_entries])
        return end.decode() if end else None

    def read_range(self, rng: StreamRange, chunk: int = 5_000):
        """Yield (entry id, fields) for every entry in the range, `chunk` entries per round trip."""
        for page in self.read_range_pages(rng, chunk):
            yield from page

    def read_range_pages(self, rng: StreamRange, chunk: int = 5_000):
        """Yield the range as lists of (entry id, fields), `chunk` entries per round trip."""
        low = f"({rng.start}"
        while True:
            entries = self.client.xrange(rng.stream, min=low, max=rng.end, count=chunk)
            if not entries:
                return
            yield [(entry_id.decode(), fields) for entry_id, fields in entries]
            if len(entries) < chunk:
                return
            low = f"({entries[-1][0].decode()}"

    def commit(self, rng: StreamRange, entry_count: int) -> bool:
        """Advance the cursor past `rng` if it still stands at its start. False: someone else did."""
        keys = [CURSORS_KEY, PLANS_KEY, DRAINED_KEY]
        return bool(self._commit(keys=keys, args=[rng.stream, rng.start, rng.end, entry_count]))

    def lag(self, stream: str) -> tuple[int, float]:
        """(undrained entries, seconds since the oldest undrained entry was stored)."""
        info = self._stream_info(stream)
        if info is None:
            return 0, 0.0
        drained = int(self.client.hget(DRAINED_KEY, stream) or 0)
        entries = max(0, info - drained)
        oldest = self.client.xrange(stream, min=f"({self.cursor(stream)}", max="+", count=1)
        seconds = max(0.0, time.time() - entry_ms(oldest[0][0]) / 1000) if oldest else 0.0
        return entries, seconds

    def _stream_info(self, stream: str) -> int | None:
        try:
            info = self.client.xinfo_stream(stream)
        except redis.ResponseError:  # no such stream yet
            return None
        return int(info.get("entries-added", info.get("length", 0)))

    def trim_below(self, stream: str, min_id: str) -> int:
        """XTRIM MINID: drop entries with ids below `min_id` (callers decide what is safe)."""
        return int(self.client.xtrim(stream, minid=min_id, approximate=False))


@dataclass(frozen=True)
class ConsumerLag:
    """How far the drain is behind one stream."""

    stream: str
    entries: int  # appended but not yet committed to the lake
    seconds: float  # age of the oldest undrained entry (0 when nothing is waiting)


async def consumer_lag_async(client: aioredis.Redis, streams: list[str]) -> list[ConsumerLag]:
    """Drain lag per stream, for the gateway's gauge: entries-added minus drained, and the age of
    the first entry after the committed cursor. Two round trips."""
    async with client.pipeline(transaction=False) as pipe:
        for stream in streams:
            pipe.xinfo_stream(stream)
        pipe.hmget(DRAINED_KEY, streams)
        pipe.hmget(CURSORS_KEY, streams)
        *infos, drained, cursors = await pipe.execute(raise_on_error=False)
    async with client.pipeline(transaction=False) as pipe:
        for stream, cursor in zip(streams, cursors):
            pipe.xrange(stream, min=f"({(cursor or b'0-0').decode()}", max="+", count=1)
        oldest = await pipe.execute()
    now = time.time()
    lags = []
    for stream, info, done, first in zip(streams, infos, drained, oldest):
        if isinstance(info, Exception):  # no such stream yet
            lags.append(ConsumerLag(stream, 0, 0.0))
            continue
        added = int(info.get("entries-added", info.get("length", 0)))
        seconds = max(0.0, now - entry_ms(first[0][0]) / 1000) if first else 0.0
        lags.append(ConsumerLag(stream, max(0, added - int(done or 0)), seconds))
    return lags


# --- async readers for the gateway (backpressure and the backlog gauge) -------------------------


@dataclass(frozen=True)
class BufferState:
    """What the gateway needs to know about the buffer, read in one round trip."""

    backlog: int  # undrained entries over the streams (entries-added minus drained)
    used_memory: int
    maxmemory: int  # 0: no limit configured
    eviction_policy: str


async def buffer_state_async(client: aioredis.Redis, streams: list[str]) -> BufferState:
    """Backlog of `streams` (as `DrainLog.lag` counts it) and Redis memory, in one pipeline."""
    async with client.pipeline(transaction=False) as pipe:
        for stream in streams:
            pipe.xinfo_stream(stream)
        pipe.hmget(DRAINED_KEY, streams)
        pipe.info("memory")
        replies = await pipe.execute(raise_on_error=False)
    *infos, drained, memory = replies
    if isinstance(memory, Exception):
        raise memory
    if isinstance(drained, Exception):
        raise drained
    backlog = 0
    for info, done in zip(infos, drained):
        if isinstance(info, redis.ResponseError):  # no such stream yet
            continue
        if isinstance(info, Exception):
            raise info
        added = int(info.get("entries-added", info.get("length", 0)))
        backlog += max(0, added - int(done or 0))
    return BufferState(backlog, int(memory.get("used_memory", 0)), int(memory.get("maxmemory", 0)),
                       str(memory.get("maxmemory_policy", "")))
