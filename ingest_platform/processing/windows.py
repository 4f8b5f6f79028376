"""Trailing-window counts for the feature views, straight from the events: the one step not in SQL.

Input, one value per event: the entity as an integer ordinal (processing/keys.py encodes the
string keys), its hour (`bucket`, hours since the epoch) and a small action code. Output: one row
per entity and hour with events (an hourly tile), ordered by entity then hour, with
`<count>_<window>` = the entity's events with the counted action in the buckets (bucket - hours,
bucket].

How, all on integers (no hash table anywhere):
1. one sort of one packed integer per event, entity-major: (entity * stride + hour) * 8 + action;
2. running counts per action over the sorted events; the last event of each (entity, hour) run is
   that tile, and carries the running counts up to and including its hour;
3. a window's count is running[tile] - running[the last tile at or before hour - window], found by
   one sorted as-of merge per window. Running counts are over the whole table: the stride leaves a
   gap of the longest window between entities, so that tile is either the entity's own or the
   previous entity's last one, and everything before it cancels out.
Steps 2-3 are one lazy polars query, so the independent columns are computed in parallel.

Why not SQL: DuckDB's `sum() OVER (PARTITION BY ... RANGE ...)` costs about 1.5 s per aggregate
per 8M rows on 2 cores (12 per view), and grouping ~10M nearly unique (user, track, hour) groups by
string keys, then regrouping per view, cost ~15 CPU s at 10M events (see docs/downstream.md).
"""

from __future__ import annotations

import polars as pl

BUCKET = "bucket"
ENTITY = "entity"
ACTION_CODES = 8  # action codes are 0-7: three bits of the packed sort key
_INT64_MAX = 2**63 - 1


def window_counts(entity: pl.Series, bucket: pl.Series, action: pl.Series, counts: dict[str, int | None],
                  windows: dict[str, int]) -> pl.DataFrame:
    """Per (entity, bucket) with events: `entity`, `bucket` and, for each count and window,
    `<count>_<window>`. `counts` maps a name to the action code it counts (None: every event).
    The inputs are parallel, in any order, without nulls; `entity` >= 0, `action` in 0-7."""
    names = [f"{name}_{window}" for window in windows for name in counts]
    if len(entity) == 0:
        return pl.DataFrame(schema={ENTITY: pl.Int64, BUCKET: pl.Int64, **dict.fromkeys(names, pl.Int64)})
    entity, bucket, action = entity.cast(pl.Int64), bucket.cast(pl.Int64), action.cast(pl.Int64)
    if entity.min() < 0 or action.min() < 0 or action.max() >= ACTION_CODES:
        raise ValueError("window_counts needs entity ordinals >= 0 and action codes 0-7")
    low = bucket.min()
    stride = bucket.max() - low + 1 + max(windows.values())
    entity, ordinals = _compact(entity, stride)
    packed = ((entity * stride + (bucket - low)) * ACTION_CODES + action).sort()
    tiles = _tiles(packed, counts).collect()
    del packed
    # For each tile and window, the last tile before the window (a row index into `tiles`; null when
    # there is none: nothing came before).
    indexed = tiles.select("position", index=pl.int_range(pl.len(), dtype=pl.Int64)).set_sorted("position")
    for window, hours in windows.items():
        if hours > 1:
            starts = tiles.select(pl.col("position") - hours).set_sorted("position")
            tiles = tiles.with_columns(starts.join_asof(indexed, on="position", strategy="backward")["index"]
                                       .alias(f"before_{window}"))
    sums = []
    for name in counts:
        running = pl.col(f"running_{name}")
        for window, hours in windows.items():
            earlier = (running.shift(1, fill_value=0) if hours == 1 else
                       running.gather(pl.col(f"before_{window}")).fill_null(0))
            sums.append((running - earlier).alias(f"{name}_{window}"))
    return tiles.lazy().select(
        pl.lit(ordinals(tiles["position"] // stride)).alias(ENTITY),
        (pl.col("position") % stride + low).alias(BUCKET),
        *sums,
    ).collect()


def _tiles(packed: pl.Series, counts: dict[str, int | None]) -> pl.LazyFrame:
    """Per (entity, hour) run of the sorted events: its position and the running counts at its
    last event."""
    position, action = pl.col("packed") // ACTION_CODES, pl.col("packed") % ACTION_CODES
    running = [(pl.int_range(1, pl.len() + 1, dtype=pl.Int64) if code is None
                else (action == code).cast(pl.Int64).cum_sum()).alias(f"running_{name}")
               for name, code in counts.items()]
    return (packed.alias("packed").to_frame().lazy()
            .select(position.alias("position"), *running)
            .filter(pl.col("position").ne_missing(pl.col("position").shift(-1))))


def _compact(entity: pl.Series, stride: int):
    """`entity`, renumbered 0..n-1 (in the same order) only if the packed key would overflow 64 bits;
    and the function mapping the numbers used back to the given ordinals."""
    if (entity.max() + 1) * stride * ACTION_CODES <= _INT64_MAX:
        return entity, lambda ordinals: ordinals
    values = entity.unique().sort()
    if len(values) * stride * ACTION_CODES > _INT64_MAX:
        raise ValueError(f"window_counts: {len(values)} entities over {stride} hours do not fit a 64-bit key")
    return entity.rank("dense").cast(pl.Int64) - 1, values.gather
