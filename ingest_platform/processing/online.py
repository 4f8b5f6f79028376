"""The online store: the latest feature values per entity in Redis, for serving.

One hash per feature view, `features:online:<view>`, field = entity key (user_id, or
"user_id|track_id"), value = JSON {"features": {...}, "feature_timestamp": ..., "materialized_at": ...}.
A push writes a fresh hash and RENAMEs it over the old one, so a reader sees the old set or the new
set, never a half-written mix, and entities that vanished from the offline store vanish here too.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

import msgspec
import pyarrow as pa
import redis

from ingest_platform.processing.features import VIEWS, FeatureView

ONLINE_KEY = "features:online:{view}"
ONLINE_VIEWS = ("user_features", "track_features")  # served by the gateway; affinity stays offline
PUSH_CHUNK = 5_000

_encode = msgspec.json.Encoder(enc_hook=str).encode


class OnlineFeatures(msgspec.Struct):
    features: dict[str, float | int | None]
    feature_timestamp: str
    materialized_at: str

    @property
    def as_of(self) -> str:
        """Freshness: the instant the values are complete up to. The newest row's
        feature_timestamp is the end of the hour still landing, so cap it at materialisation time."""
        return min(self.feature_timestamp, self.materialized_at)


_decode = msgspec.json.Decoder(OnlineFeatures).decode


def entity_field(view: FeatureView, row: dict) -> str:
    return "|".join(str(row[k]) for k in view.entity_keys)


def push_latest(client: redis.Redis, view: FeatureView, latest: pa.Table,
                materialized_at: datetime | None = None) -> int:
    """Replace the online values of `view` with `latest` (one row per entity); returns rows pushed."""
    stamp = _iso(materialized_at or datetime.now(timezone.utc))
    key = ONLINE_KEY.format(view=view.name)
    staging = f"{key}:staging:{time.time_ns()}"
    pushed = 0
    for batch in latest.to_batches(PUSH_CHUNK):
        mapping = {}
        for row in batch.to_pylist():
            value = OnlineFeatures({f: row[f] for f in view.feature_names}, _iso(row["feature_timestamp"]), stamp)
            mapping[entity_field(view, row)] = _encode(value)
        if mapping:
            client.hset(staging, mapping=mapping)
            pushed += len(mapping)
    if pushed:
        client.rename(staging, key)
    else:
        client.delete(key)
    return pushed


def _iso(instant: datetime) -> str:
    return instant.astimezone(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def decode(raw: bytes | None) -> OnlineFeatures | None:
    return None if raw is None else _decode(raw)


def read_online(client: redis.Redis, view_name: str, entity: str) -> OnlineFeatures | None:
    return decode(client.hget(ONLINE_KEY.format(view=view_name), entity))


async def read_online_async(client, view_name: str, entity: str) -> OnlineFeatures | None:
    """The same read for redis.asyncio clients (the gateway)."""
    return decode(await client.hget(ONLINE_KEY.format(view=view_name), entity))


def online_view(view_name: str) -> FeatureView:
    return VIEWS[view_name]
