"""Bearer-key authentication and scope checks, reusable by every route.

Records are cached for one second per worker, so a revocation (or expiry) reaches every worker
and process within a second, while the hot path costs one hash and no Redis round trip. While the
buffer health knows Redis is unreachable, a key seen lately is taken from the cache however old
(up to STALE_WHILE_UNREACHABLE_SECONDS) and nothing is asked of Redis, so the request gets its 503
at once instead of after a timeout.

Route modules call `await authorize(request, scope)` (or `authorize_headers`) and get the key's
record or an `AuthError`, which the app renders as a 401/403 error body.
"""

from __future__ import annotations

import time
from typing import Protocol

import redis.asyncio as aioredis
import redis.exceptions

from ingest_platform.storage.api_keys import (
    ApiKeyRecord,
    auth_failures,
    fetch_record,
    matches,
    record_auth_failure,
    split_key,
)

CACHE_SECONDS = 1.0
# While Redis is unreachable a key seen this recently stays usable: nothing can be revoked meanwhile
# (revocations are written to Redis), and the write that follows answers 503 on its own if need be.
STALE_WHILE_UNREACHABLE_SECONDS = 60.0
_MAX_CACHED = 10_000  # unknown ids from brute force must not grow memory
_REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


class Reachability(Protocol):
    """What the authenticator needs of the buffer health (gateway/backpressure.BufferHealth)."""

    @property
    def unreachable(self) -> bool: ...

    def mark_unreachable(self, exc: BaseException) -> None: ...


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


class TooManyAuthFailures(AuthError):
    """429: this client sent too many invalid keys lately; no key of it is checked until the window ends."""

    def __init__(self, retry_after: int):
        super().__init__(429, "too_many_auth_failures",
                         f"too many invalid API keys from this address; retry in {retry_after} s")
        self.retry_after = retry_after

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


_MISSING = AuthError(401, "missing_api_key", "send an API key as 'Authorization: Bearer <key>'")
_INVALID = AuthError(401, "invalid_api_key", "the API key is not valid")


class Authenticator:
    def __init__(self, client: aioredis.Redis, failure_limit: int = 20, failure_window_seconds: float = 60,
                 health: Reachability | None = None):
        self.client = client
        self.health = health  # None: always ask Redis (tools, tests)
        self.failure_limit, self.failure_window = failure_limit, failure_window_seconds
        self._cache: dict[str, tuple[float, ApiKeyRecord | None]] = {}
        # Addresses this worker refused as blocked: checked in Redis even on the cached hot path until
        # their window has ended, so repeating a correct guess does not confirm it either.
        self._blocked: set[str] = set()

    async def authenticate(self, key: str | None, client: str | None = None) -> ApiKeyRecord:
        """The active record for `key`; raises AuthError (401) when missing, wrong, revoked, expired,
        and TooManyAuthFailures (429) while `client` (an address) is blocked for guessing keys."""
        if not key:
            raise _MISSING
        key_id = split_key(key)
        record, cached = await self._record(key_id) if key_id else (None, False)
        valid = matches(record, key)
        # A key verified within the last second skips the check (the hot path); anything else from a
        # blocked address is refused without saying whether the key was right.
        if client and self.failure_limit and (not (valid and cached) or client in self._blocked):
            await self._refuse_if_blocked(client)
        if not valid:
            if client and self.failure_limit:  # 0: off (behind a proxy every client shares one address)
                await self._count_failure(client)
            raise _INVALID
        state = record.state
        if state != "active":
            raise AuthError(401, f"api_key_{state}", f"the API key {record.key_id} is {state}")
        return record

    def _known_unreachable(self) -> bool:
        return self.health is not None and self.health.unreachable

    def _unreachable(self, exc: BaseException) -> None:
        if self.health is not None:
            self.health.mark_unreachable(exc)

    async def _refuse_if_blocked(self, client: str) -> None:
        if self._known_unreachable():
            return  # no round trip that can only fail; the write answers 503 on its own
        try:
            failures, retry_after = await auth_failures(self.client, client)
        except _REDIS_DOWN as exc:
            self._unreachable(exc)
            return  # the key lookup itself answers 503 when Redis is gone
        if failures >= self.failure_limit:
            if len(self._blocked) > _MAX_CACHED:
                self._blocked.clear()
            self._blocked.add(client)
            raise TooManyAuthFailures(retry_after)
        self._blocked.discard(client)

    async def _count_failure(self, client: str) -> None:
        if self._known_unreachable():
            return
        try:
            await record_auth_failure(self.client, client, self.failure_window)
        except _REDIS_DOWN as exc:
            self._unreachable(exc)

    async def authorize(self, key: str | None, scope: str, client: str | None = None) -> ApiKeyRecord:
        """Like `authenticate`, and 403 unless the key carries `scope`."""
        record = await self.authenticate(key, client)
        if scope not in record.scopes:
            raise AuthError(403, "forbidden", f"this API key lacks the scope {scope!r}")
        return record

    async def _record(self, key_id: str) -> tuple[ApiKeyRecord | None, bool]:
        """(the record of `key_id` or None, whether it came from this worker's cache)."""
        now = time.monotonic()
        cached = self._cache.get(key_id)
        if cached and now - cached[0] < CACHE_SECONDS:
            return cached[1], True
        if self._known_unreachable():  # a round trip now would only wait for its timeout
            if cached and now - cached[0] < STALE_WHILE_UNREACHABLE_SECONDS:
                return cached[1], True
            raise KeyStoreUnavailable()
        try:
            record = await fetch_record(self.client, key_id)
        except _REDIS_DOWN as exc:
            self._unreachable(exc)  # the write that follows is refused at once, not sent to wait too
            if cached and now - cached[0] < STALE_WHILE_UNREACHABLE_SECONDS:
                return cached[1], True
            raise KeyStoreUnavailable() from exc
        if len(self._cache) > _MAX_CACHED:
            self._cache.clear()
        self._cache[key_id] = (now, record)
        return record, False


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
    client = request.client.host if request.client else None
    return await request.app.state.gateway.auth.authorize(token, scope, client)
