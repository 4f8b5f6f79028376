"""The trailing-window kernel of the feature views against a brute-force sum."""

from __future__ import annotations

import random

import pyarrow as pa
import pytest

from ingest_platform.processing.windows import window_sums

WINDOWS = {"1h": 1, "3h": 3, "24h": 24}


def brute_force(rows: list[tuple], hours: int) -> list[int]:
    """rows: (user, track, bucket, count), sorted; the sum over (bucket - hours, bucket] per entity."""
    return [sum(c for u2, t2, b2, c in rows if (u2, t2) == (u, t) and b - hours < b2 <= b) for u, t, b, _ in rows]


def tiles(rows: list[tuple]) -> pa.Table:
    users, tracks, buckets, counts = zip(*rows)
    return pa.table({"user_id": list(users), "track_id": list(tracks), "bucket": list(buckets), "plays": list(counts)})


def test_windows_match_brute_force_and_never_cross_entities():
    rng = random.Random(6)
    rows = sorted({(f"u{rng.randrange(3)}", f"t{rng.randrange(3)}", 490_000 + rng.randrange(60)): None
                   for _ in range(300)})
    rows = [(u, t, b, rng.randrange(1, 5)) for u, t, b in rows]
    out = window_sums(tiles(rows), ("user_id", "track_id"), ("plays",), WINDOWS)
    for window, hours in WINDOWS.items():
        assert out[f"plays_{window}"].to_pylist() == brute_force(rows, hours), window


def test_window_edges_and_adjacent_entities():
    rows = [("u1", "t1", 100, 1), ("u1", "t1", 102, 2), ("u1", "t1", 103, 4),  # 103 - 3 = 100 falls out of 3h
            ("u1", "t2", 103, 8),  # the next entity, same hour: sees nothing of u1/t1
            ("u2", "t1", 90, 16)]
    out = window_sums(tiles(rows), ("user_id", "track_id"), ("plays",), WINDOWS)
    assert out["plays_1h"].to_pylist() == [1, 2, 4, 8, 16]
    assert out["plays_3h"].to_pylist() == [1, 3, 6, 8, 16]
    assert out["plays_24h"].to_pylist() == [1, 3, 7, 8, 16]


def test_unsorted_tiles_are_refused():
    with pytest.raises(ValueError, match="ordered"):
        window_sums(tiles([("u1", "t1", 5, 1), ("u1", "t1", 4, 1)]), ("user_id", "track_id"), ("plays",), WINDOWS)


def test_no_tiles():
    out = window_sums(tiles([("u", "t", 1, 1)]).slice(0, 0), ("user_id", "track_id"), ("plays",), WINDOWS)
    assert out.num_rows == 0 and "plays_24h" in out.column_names
