"""Bearer-key authentication and scope checks, reusable by every route.

Records are cached for one second per worker, so a revocation (or expiry) reaches every worker
and process within a second, while the hot path costs one hash and no Redis round trip.

Route modules call `await authorize(request, scope)` (or `authorize_headers`) and get the key's
record or an `AuthError`, which the app renders as a 401/403 error body.
"""

from __future__ import annotations

import time

import redis.asyncio as aioredis
import redis.exceptions

from ingest_platform.storage.api_keys import ApiKeyRecord, fetch_record, matches, split_key

CACHE_SECONDS = 1.0
# While Redis is unreachable a key seen this recently stays usable: nothing can be revoked meanwhile
# (revocations are written to Redis), and the write that follows answers 503 on its own if need be.
STALE_WHILE_UNREACHABLE_SECONDS = 60.0
_MAX_CACHED = 10_000  # unknown ids from brute force must not grow memory


class AuthError(Exception):
    """401 (no usable key) or 403 (key lacks the scope); `code` is machine-readable."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    @property
    def headers(self) -> dict[str, str]:
        if self.status == 401:
            return {"WWW-Authenticate": "Bearer"}
        if self.status == 503:
            return {"Retry-After": "1"}
        return {}


class KeyStoreUnavailable(AuthError):
    """Redis, which holds the keys, cannot be reached: 503, never a 500 or a wrong 401."""

    def __init__(self) -> None:
        super().__init__(503, "buffer_unavailable", "the event buffer (Redis) is unreachable; retry later")


_MISSING = AuthError(401, "missing_api_key", "send an API key as 'Authorization: Bearer <key>'")
_INVALID = AuthError(401, "invalid_api_key", "the API key is not valid")


class Authenticator:
    def __init__(self, client: aioredis.Redis):
        self.client = client
        self._cache: dict[str, tuple[float, ApiKeyRecord | None]] = {}

    async def authenticate(self, key: str | None) -> ApiKeyRecord:
        """The active record for `key`; raises AuthError (401) when missing, wrong, revoked, expired."""
        if not key:
            raise _MISSING
        key_id = split_key(key)
        if key_id is None:
            raise _INVALID
        record = await self._record(key_id)
        if not matches(record, key):
            raise _INVALID
        state = record.state
        if state != "active":
            raise AuthError(401, f"api_key_{state}", f"the API key {record.key_id} is {state}")
        return record

    async def authorize(self, key: str | None, scope: str) -> ApiKeyRecord:
        """Like `authenticate`, and 403 unless the key carries `scope`."""
        record = await self.authenticate(key)
        if scope not in record.scopes:
            raise AuthError(403, "forbidden", f"this API key lacks the scope {scope!r}")
        return record

    async def _record(self, key_id: str) -> ApiKeyRecord | None:
        now = time.monotonic()
        cached = self._cache.get(key_id)
        if cached and now - cached[0] < CACHE_SECONDS:
            return cached[1]
        try:
            record = await fetch_record(self.client, key_id)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            if cached and now - cached[0] < STALE_WHILE_UNREACHABLE_SECONDS:
                return cached[1]
            raise KeyStoreUnavailable() from exc
        if len(self._cache) > _MAX_CACHED:
            self._cache.clear()
        self._cache[key_id] = (now, record)
        return record


def bearer_token(header: str | bytes | None) -> str | None:
    if not header:
        return None
    if isinstance(header, bytes):
        header = header.decode("latin-1")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


async def authorize(request, scope: str) -> ApiKeyRecord:
    """For Starlette routes: the key of `request` if it may use `scope`, else AuthError.

    Example (a features route): ``key = await authorize(request, "features:read")``.
    """
    token = bearer_token(request.headers.get("authorization"))
    return await request.app.state.gateway.auth.authorize(token, scope)
