"""Per-key rate limiting in Redis, fused with the append: one round trip per request.

A token bucket per API key lives in a Redis hash. One server-side script refills the bucket from
Redis's own clock (so gateway clocks do not matter), takes the request's cost, and only if the
tokens were there appends the request's stream entries. Rate check and append are one atomic
step, so every gateway worker and process sharing the Redis sees the same bucket, and a limited
request writes nothing.

Why not a library such as `limits`: it would cost a second round trip per request, and the
per-command client overhead is where the gateway's time goes (hence also `pipelined`).
"""

from __future__ import annotations

from dataclasses import dataclass

from ingest_platform.contract import STREAM_ENTRY_FIELD, STREAM_RAW_FIELD
from ingest_platform.storage.pipelined import PipelinedRedis, Script

BUCKET_PREFIX = "ingest:ratelimit:"  # + key id -> hash {tokens, ts}

# The shebang makes Redis refuse the whole script up front when it is out of memory (noeviction),
# instead of failing half way; nothing is written then.
# KEYS[1] bucket, KEYS[2..n] streams. ARGV: rate/s, burst, cost, the names of the two fields of a
# stream entry (contract: entry, raw), then those two values per stream.
# Returns {admitted 1/0, tokens left (floored), retry after in microseconds, entry ids...}.
ADMIT_LUA = """#!lua
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local rate, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens, ts = tonumber(b[1]), tonumber(b[2])
if tokens == nil or ts == nil then tokens, ts = burst, now end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate / 1000000)
if tokens < cost then
  return {0, math.floor(tokens), math.ceil((cost - tokens) * 1000000 / rate)}
end
tokens = tokens - cost
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
local out = {1, math.floor(tokens), 0}
for i = 2, #KEYS do
  out[#out + 1] = redis.call('XADD', KEYS[i], '*', ARGV[4], ARGV[2 + 2 * i], ARGV[5], ARGV[3 + 2 * i])
end
return out
"""


@dataclass(frozen=True)
class RateLimit:
    """Sustained events per second and the burst a key may spend at once."""

    per_second: float
    burst: int


@dataclass(frozen=True)
class Admission:
    admitted: bool
    remaining: int  # tokens left in the bucket
    retry_after: float  # seconds until the request's cost is available (0 when admitted)
    entry_ids: list[str]


def bucket_key(key_id: str) -> str:
    return BUCKET_PREFIX + key_id


class Admitter:
    """Runs the admit-and-append script (reloaded by EVAL after a Redis restart lost it)."""

    def __init__(self, client: PipelinedRedis):
        self._script = Script(client, ADMIT_LUA)

    async def admit(self, key_id: str, limit: RateLimit, cost: int,
                    entries: list[tuple[str, bytes, bytes]]) -> Admission:
        """`entries`: (stream, entry, raws) per stream entry to append (`contract.encode_stream_entry`)."""
        keys = [bucket_key(key_id), *(stream for stream, _, _ in entries)]
        args = [limit.per_second, limit.burst, cost, STREAM_ENTRY_FIELD, STREAM_RAW_FIELD,
                *(value for _, entry, raws in entries for value in (entry, raws))]
        reply = await self._script(keys=keys, args=args)
        return parse_reply(reply)


def parse_reply(reply: list) -> Admission:
    admitted, remaining, wait_us, *ids = reply
    return Admission(
        admitted=bool(admitted), remaining=int(remaining), retry_after=int(wait_us) / 1_000_000,
        entry_ids=[i.decode() if isinstance(i, bytes) else i for i in ids],
    )
