"""Bearer-key authentication with a one-second cache, so revocation reaches every worker in <= 1 s."""

from __future__ import annotations

import time

import redis.asyncio as aioredis

from ingest_platform.storage.api_keys import KEYS_HASH, ApiKeyRecord, get_record, split_key, verify

CACHE_SECONDS = 1.0


class Authenticator:
    def __init__(self, client: aioredis.Redis):
        self.client = client
        self._cache: dict[str, tuple[float, ApiKeyRecord | None]] = {}

    async def authenticate(self, key: str | None) -> ApiKeyRecord | None:
        """The active record for `key`, or None (missing, malformed, unknown, revoked, expired)."""
        if not key:
            return None
        key_id = split_key(key)
        if key_id is None:
            return None
        record = await self._record(key_id)
        return record if verify(record, key) else None

    async def _record(self, key_id: str) -> ApiKeyRecord | None:
        now = time.monotonic()
        cached = self._cache.get(key_id)
        if cached and now - cached[0] < CACHE_SECONDS:
            return cached[1]
        record = get_record(await self.client.hget(KEYS_HASH, key_id))
        if len(self._cache) > 10_000:  # unknown ids from brute force must not grow memory
            self._cache.clear()
        self._cache[key_id] = (now, record)
        return record


def bearer_token(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None
