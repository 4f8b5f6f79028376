"""Feast's point-in-time retrieval on the benchmark's data. Runs inside bench/.venv-feast (Feast is
never a dependency of the project); prints one JSON line with the timing.

    bench/.venv-feast/bin/python bench/feast_runner.py WORKDIR USER_FEATURES.parquet TRACK_FEATURES.parquet LABELS.parquet
"""

import json
import sys
import time
from datetime import timedelta
from pathlib import Path

import pyarrow.parquet as pq
from feast import Entity, FeatureStore, FeatureView, Field, FileSource
from feast.infra.offline_stores.duckdb import DuckDBOfflineStoreConfig
from feast.repo_config import RepoConfig
from feast.types import Float64, Int64


def feature_view(name: str, entity: Entity, path: str) -> FeatureView:
    schema = pq.read_schema(path)
    fields = [Field(name=f.name, dtype=Float64 if str(f.type) == "double" else Int64)
              for f in schema if f.name not in (entity.join_key, "feature_timestamp")]
    source = FileSource(name=f"{name}_source", path=path, timestamp_field="feature_timestamp")
    # A TTL longer than any window: the feature rows themselves carry the window expiry.
    return FeatureView(name=name, entities=[entity], schema=fields, source=source, ttl=timedelta(days=3650))


def main(workdir: str, user_path: str, track_path: str, labels_path: str) -> None:
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    config = RepoConfig(project="bench", provider="local", registry=str(work / "registry.db"),
                        offline_store=DuckDBOfflineStoreConfig(),
                        online_store={"type": "sqlite", "path": str(work / "online.db")},
                        entity_key_serialization_version=3, repo_path=str(work))
    store = FeatureStore(config=config)
    user, track = Entity(name="user", join_keys=["user_id"]), Entity(name="track", join_keys=["track_id"])
    views = [feature_view("user_features", user, user_path), feature_view("track_features", track, track_path)]
    store.apply([user, track, *views])
    refs = [f"{v.name}:{f.name}" for v in views for f in v.features]
    labels = pq.read_table(labels_path).to_pandas()
    started = time.perf_counter()
    frame = store.get_historical_features(entity_df=labels, features=refs).to_df()
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "rows": len(frame), "columns": len(frame.columns)}))


if __name__ == "__main__":
    main(*sys.argv[1:])
