"""API keys, kept in Redis as SHA-256 hashes (the key itself is shown once and never stored).

A key looks like `ik_<key id>_<secret>`. The key id is public (it is stamped on every event and
logged); the secret is 32 random bytes, so a fast hash is enough and no salt is needed. Lookup is
by key id, then a constant-time comparison of hashes.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

import msgspec
import redis

KEYS_HASH = "ingest:api_keys"  # hash: key id -> ApiKeyRecord (JSON)
KEY_PREFIX = "ik"
ALL_SCOPES = ("user_interaction", "feedback_event", "features:read")


class ApiKeyRecord(msgspec.Struct):
    key_id: str
    name: str
    key_hash: str
    scopes: list[str]
    created_at: float
    revoked_at: float | None = None
    expires_at: float | None = None
    rate_per_second: float | None = None  # None: the gateway's default (settings)
    burst: int | None = None

    @property
    def state(self) -> str:
        """active, revoked or expired."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= time.time():
            return "expired"
        return "active"

    @property
    def active(self) -> bool:
        return self.state == "active"


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(ApiKeyRecord).decode


def hash_secret(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def split_key(key: str) -> str | None:
    """The key id of a well-formed key, else None."""
    parts = key.split("_")
    if len(parts) != 3 or parts[0] != KEY_PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1]


def create_key(client: redis.Redis, name: str, scopes: list[str] | None = None,
               expires_in_seconds: float | None = None, rate_per_second: float | None = None,
               burst: int | None = None) -> tuple[str, ApiKeyRecord]:
    """Store a new key; returns (the key, shown once; its record)."""
    scopes = list(scopes or ALL_SCOPES)
    unknown = sorted(set(scopes) - set(ALL_SCOPES))
    if unknown:
        raise ValueError(f"unknown scopes {unknown}; choose from {list(ALL_SCOPES)}")
    key_id = secrets.token_hex(6)
    key = f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32).replace('_', '-')}"
    now = time.time()
    record = ApiKeyRecord(
        key_id=key_id, name=name, key_hash=hash_secret(key), scopes=scopes, created_at=now,
        expires_at=now + expires_in_seconds if expires_in_seconds else None,
        rate_per_second=rate_per_second, burst=burst,
    )
    client.hset(KEYS_HASH, key_id, _encode(record))
    return key, record


def get_record(raw: bytes | None) -> ApiKeyRecord | None:
    return _decode(raw) if raw else None


def matches(record: ApiKeyRecord | None, key: str) -> bool:
    """Constant-time check of `key` against its stored hash (whatever the key's state)."""
    expected = record.key_hash if record else "0" * 64
    return hmac.compare_digest(expected, hash_secret(key)) and record is not None


def verify(record: ApiKeyRecord | None, key: str) -> bool:
    """True only for a matching, active key."""
    return matches(record, key) and record.active


def list_keys(client: redis.Redis) -> list[ApiKeyRecord]:
    records = [_decode(v) for v in client.hvals(KEYS_HASH)]
    return sorted(records, key=lambda r: r.created_at)


def revoke_key(client: redis.Redis, key_id: str) -> bool:
    record = get_record(client.hget(KEYS_HASH, key_id))
    if record is None:
        return False
    record.revoked_at = record.revoked_at or time.time()
    client.hset(KEYS_HASH, key_id, _encode(record))
    return True


async def fetch_record(client, key_id: str) -> ApiKeyRecord | None:
    """The record of `key_id` through an async (redis.asyncio) client; None when unknown."""
    return get_record(await client.hget(KEYS_HASH, key_id))


# --- failed authentication, counted per client address (brute-force protection) -----------------
AUTH_FAILURES_PREFIX = "ingest:auth_failures:"


async def auth_failures(client, who: str) -> tuple[int, int]:
    """(failures of `who` in the current window, seconds until the window ends)."""
    key = AUTH_FAILURES_PREFIX + who
    async with client.pipeline(transaction=False) as pipe:
        count, ttl = await pipe.get(key).ttl(key).execute()
    return int(count or 0), max(int(ttl), 1)


async def record_auth_failure(client, who: str, window_seconds: float) -> int:
    """Count one failure of `who`; the window starts at its first failure. Returns the count."""
    key = AUTH_FAILURES_PREFIX + who
    async with client.pipeline(transaction=True) as pipe:
        count, _ = await pipe.incr(key).expire(key, max(1, round(window_seconds)), nx=True).execute()
    return int(count)

