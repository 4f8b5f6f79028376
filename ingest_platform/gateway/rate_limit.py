"""Per-key rate limits: which limit a key has, and the headers that tell the client about it.

The bucket itself lives in Redis (`storage.rate_limits`), checked and spent in the same script
that appends the events. Limits count events: a request costs its number of events (at least 1).

Headers, on every answer that spent or tried to spend the bucket (202, 422, 403, 429, 413):
- The current IETF draft (draft-ietf-httpapi-ratelimit-headers-11, structured fields):
  `RateLimit-Policy: "events";q=<burst>;w=<seconds to refill an empty bucket>` (constant per
  key) and `RateLimit: "events";r=<events left>;t=<seconds until the bucket is full>` (on a 429,
  `t` equals Retry-After: the time until the refused request's cost is available). The
  quota unit is an event; the draft's registry has no such unit, so `qu` is left out, and for
  single-event requests (the usual case) an event is a request. The partition is the API key;
  no `pk` is sent (the client knows its key).
- The earlier drafts' (up to -06) `RateLimit-Limit` (burst), `RateLimit-Remaining` and
  `RateLimit-Reset` (seconds until the bucket is full), kept for clients written against them:
  many rate-limit libraries still send and read these three.
- `Retry-After` (seconds) on 429 only. A request costing more than the burst can never pass,
  however long the client waits: it gets 413 `batch_exceeds_burst` without Retry-After (see
  `over_burst`).
"""

from __future__ import annotations

import math

from ingest_platform.settings import Settings
from ingest_platform.storage.api_keys import ApiKeyRecord
from ingest_platform.storage.rate_limits import Admission, RateLimit

POLICY_NAME = "events"
_ITEM = b'"%s"' % POLICY_NAME.encode()  # the policy's name as a structured-field string
_RATELIMIT = _ITEM + b";r=%d;t=%d"
# (burst, rate) -> the two headers that depend on the limit alone, made once (the hot path sends
# them on every answer).
_constant: dict[tuple[int, float], tuple[tuple[bytes, bytes], tuple[bytes, bytes]]] = {}


def limit_for(record: ApiKeyRecord, settings: Settings) -> RateLimit:
    return RateLimit(
        per_second=record.rate_per_second or settings.gateway_rate_per_second,
        burst=record.burst or settings.gateway_rate_burst,
    )


def policy(limit: RateLimit) -> bytes:
    """The RateLimit-Policy value: the burst, refilled at the key's rate in `w` seconds (a token
    bucket's long-run rate is q/w events per second)."""
    value = _ITEM + b";q=%d" % limit.burst
    if limit.per_second > 0:
        value += b";w=%d" % max(1, math.ceil(limit.burst / limit.per_second))
    return value


def _constant_headers(limit: RateLimit) -> tuple[tuple[bytes, bytes], tuple[bytes, bytes]]:
    key = (limit.burst, limit.per_second)
    pair = _constant.get(key)
    if pair is None:
        if len(_constant) > 1024:  # limits are per key; keep the cache bounded all the same
            _constant.clear()
        pair = _constant[key] = ((b"ratelimit-policy", policy(limit)), (b"ratelimit-limit", b"%d" % limit.burst))
    return pair


def headers(limit: RateLimit, admission: Admission, retry_after: bool = True) -> list[tuple[bytes, bytes]]:
    """RateLimit headers for an answer; Retry-After too when the request was refused (and
    `retry_after`: a request that can never pass gets none)."""
    policy_header, limit_header = _constant_headers(limit)
    remaining = admission.remaining if admission.remaining > 0 else 0
    # Reset: seconds until the bucket is full again.
    reset = max(0, math.ceil((limit.burst - remaining) / limit.per_second)) if limit.per_second else 0
    if admission.admitted or not retry_after:
        return [policy_header, (b"ratelimit", _RATELIMIT % (remaining, reset)), limit_header,
                (b"ratelimit-remaining", b"%d" % remaining), (b"ratelimit-reset", b"%d" % reset)]
    wait = max(1, math.ceil(admission.retry_after))
    # The draft: Retry-After should not end before RateLimit's effective window (`t`). On a refusal
    # the window is "until this request's cost is available", which is exactly Retry-After.
    return [policy_header, (b"ratelimit", _RATELIMIT % (remaining, wait)), limit_header,
            (b"ratelimit-remaining", b"%d" % remaining), (b"ratelimit-reset", b"%d" % reset),
            (b"retry-after", b"%d" % wait)]


def over_burst(limit: RateLimit, cost: int) -> tuple[str, str]:
    """(code, message) for a request whose cost exceeds the burst: no wait refills the bucket
    beyond the burst, so only splitting the batch helps."""
    return "batch_exceeds_burst", (
        f"this request holds {cost} events, more than this API key's burst of {limit.burst}: "
        f"it can never be admitted; split it into requests of at most {limit.burst} events")
