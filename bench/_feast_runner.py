"""Feast's point-in-time retrieval on the benchmark's data, for bench/features.py. Runs inside
bench/.venv-feast (Feast is never a dependency of the project; the leading underscore keeps
`python -m bench` from running this on its own); prints one JSON line with the timing.

    bench/.venv-feast/bin/python bench/_feast_runner.py WORKDIR USER_FEATURES.parquet TRACK_FEATURES.parquet \
        LABELS.parquet [--memory-gb 10] [--threads 2] [--spill-gb 20]

Set up as a Feast user would for these features: entities `user` and `track`, one feature view per
entity over the same Parquet history our offline store keeps, the DuckDB offline store, and a TTL
equal to the longest window (30 days: a row older than that has nothing left in any window; Feast's
own docs recommend a TTL to bound the point-in-time join's lookback).

Feast's DuckDB offline store runs on ibis's default DuckDB backend and offers no setting of its own
for memory or threads; DuckDB's default memory limit is 80% of RAM, which on a shared machine is
more than we may take. So the default backend is set to a DuckDB connection with an explicit
memory_limit, threads and a spill directory inside WORKDIR (removed with it), capped in size.
"""

import argparse
import json
import time
from datetime import timedelta
from pathlib import Path

import ibis
import pyarrow.parquet as pq
from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
from feast.infra.offline_stores.duckdb import DuckDBOfflineStoreConfig
from feast.repo_config import RepoConfig
from feast.types import Float64, Int64

LONGEST_WINDOW = timedelta(days=30)


def feature_view(name: str, entity: Entity, path: str) -> FeatureView:
    schema = pq.read_schema(path)
    fields = [Field(name=f.name, dtype=Float64 if str(f.type) == "double" else Int64)
              for f in schema if f.name not in (entity.join_key, "feature_timestamp")]
    source = FileSource(name=f"{name}_source", path=path, timestamp_field="feature_timestamp")
    return FeatureView(name=name, entities=[entity], schema=fields, source=source, ttl=LONGEST_WINDOW)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("workdir", type=Path)
    parser.add_argument("user_features")
    parser.add_argument("track_features")
    parser.add_argument("labels")
    parser.add_argument("--memory-gb", type=float, default=10.0, help="DuckDB memory_limit for Feast's backend.")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--spill-gb", type=float, default=20.0, help="Cap on DuckDB's spill files (in WORKDIR).")
    args = parser.parse_args()

    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    ibis.set_backend(ibis.duckdb.connect(memory_limit=f"{args.memory_gb:g}GB", threads=args.threads,
                                         temp_directory=str(work / "duckdb-spill"),
                                         max_temp_directory_size=f"{args.spill_gb:g}GB"))
    config = RepoConfig(project="bench", provider="local", registry=str(work / "registry.db"),
                        offline_store=DuckDBOfflineStoreConfig(),
                        online_store={"type": "sqlite", "path": str(work / "online.db")},
                        entity_key_serialization_version=3, repo_path=str(work))
    store = FeatureStore(config=config)
    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING)
    track = Entity(name="track", join_keys=["track_id"], value_type=ValueType.STRING)
    views = [feature_view("user_features", user, args.user_features),
             feature_view("track_features", track, args.track_features)]
    store.apply([user, track, *views])
    refs = [f"{v.name}:{f.name}" for v in views for f in v.features]
    labels = pq.read_table(args.labels).to_pandas()
    started = time.perf_counter()
    frame = store.get_historical_features(entity_df=labels, features=refs).to_df()
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "rows": len(frame), "columns": len(frame.columns)}))


if __name__ == "__main__":
    main()
