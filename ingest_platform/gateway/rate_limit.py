"""Per-key rate limits: which limit a key has, and the headers that tell the client about it.

The bucket itself lives in Redis (`storage.rate_limits`), checked and spent in the same script
that appends the events. Limits count events: a request costs its number of events (at least 1).
Headers follow the IETF RateLimit header fields draft as widely deployed: RateLimit-Limit,
RateLimit-Remaining, RateLimit-Reset (seconds), plus Retry-After on 429.
"""

from __future__ import annotations

import math

from ingest_platform.settings import Settings
from ingest_platform.storage.api_keys import ApiKeyRecord
from ingest_platform.storage.rate_limits import Admission, RateLimit


def limit_for(record: ApiKeyRecord, settings: Settings) -> RateLimit:
    return RateLimit(
        per_second=record.rate_per_second or settings.gateway_rate_per_second,
        burst=record.burst or settings.gateway_rate_burst,
    )


def headers(limit: RateLimit, admission: Admission) -> list[tuple[bytes, bytes]]:
    # Reset: seconds until the bucket is full again.
    reset = math.ceil((limit.burst - admission.remaining) / limit.per_second) if limit.per_second else 0
    out = [
        (b"ratelimit-limit", b"%d" % limit.burst),
        (b"ratelimit-remaining", b"%d" % max(0, admission.remaining)),
        (b"ratelimit-reset", b"%d" % max(0, reset)),
    ]
    if not admission.admitted:
        out.append((b"retry-after", str(max(1, math.ceil(admission.retry_after))).encode()))
    return out
