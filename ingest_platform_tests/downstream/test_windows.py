"""The feature views' kernel: integer-coded keys and trailing-window counts, against brute force."""

from __future__ import annotations

import random

import polars as pl
import pyarrow as pa
import pytest

from ingest_platform.processing.keys import encode_keys
from ingest_platform.processing.windows import window_counts

WINDOWS = {"1h": 1, "3h": 3, "24h": 24}
COUNTS = {"events": None, "plays": 0, "skips": 1}


def brute_force(events: list[tuple[int, int, int]]) -> list[dict]:
    """events: (entity, bucket, action). A row per (entity, bucket) with events, in order, with each
    count over (bucket - hours, bucket] of that entity."""
    rows = []
    for entity, bucket in sorted({(e, b) for e, b, _ in events}):
        row = {"entity": entity, "bucket": bucket}
        for window, hours in WINDOWS.items():
            inside = [a for e, b, a in events if e == entity and bucket - hours < b <= bucket]
            for name, code in COUNTS.items():
                row[f"{name}_{window}"] = sum(1 for a in inside if code is None or a == code)
        rows.append(row)
    return rows


def kernel(events: list[tuple[int, int, int]]) -> list[dict]:
    entity, bucket, action = zip(*events) if events else ((), (), ())
    return window_counts(pl.Series(entity, dtype=pl.Int64), pl.Series(bucket, dtype=pl.Int64),
                         pl.Series(action, dtype=pl.UInt8), COUNTS, WINDOWS).to_dicts()


def test_windows_match_brute_force_in_any_input_order():
    rng = random.Random(6)
    events = [(rng.randrange(5), 490_000 + rng.randrange(60), rng.randrange(4)) for _ in range(400)]
    assert kernel(events) == brute_force(events)
    rng.shuffle(events)
    assert kernel(events) == brute_force(events)


def test_window_edges_and_adjacent_entities():
    events = [(1, 100, 0), (1, 102, 0), (1, 102, 0), (1, 103, 1),  # 103 - 3 = 100 falls out of 3h
              (2, 103, 0),  # the next entity, same hour: sees nothing of entity 1
              (7, 90, 0), (7, 90, 3)]  # action 3 is counted only by `events`
    rows = kernel(events)
    assert [(r["entity"], r["bucket"]) for r in rows] == [(1, 100), (1, 102), (1, 103), (2, 103), (7, 90)]
    assert [r["plays_1h"] for r in rows] == [1, 2, 0, 1, 1]
    assert [r["plays_3h"] for r in rows] == [1, 3, 2, 1, 1]
    assert [r["events_24h"] for r in rows] == [1, 3, 4, 1, 2]
    assert [r["skips_24h"] for r in rows] == [0, 0, 1, 0, 0]


def test_huge_ordinals_and_negative_hours_are_handled():
    """Ordinals that would overflow the packed 64-bit sort key are renumbered, and given back."""
    events = [(2**62, -5, 0), (2**62, -4, 1), (3, 10**6, 0), (0, -5, 0)]
    assert kernel(events) == brute_force(events)


def test_no_events():
    out = window_counts(pl.Series([], dtype=pl.Int64), pl.Series([], dtype=pl.Int64),
                        pl.Series([], dtype=pl.UInt8), COUNTS, WINDOWS)
    assert out.height == 0 and "plays_24h" in out.columns


def test_out_of_range_codes_are_refused():
    with pytest.raises(ValueError, match="action codes"):
        kernel([(0, 1, 8)])
    with pytest.raises(ValueError, match="ordinals"):
        kernel([(-1, 1, 0)])


def test_key_codes_round_trip_unusual_keys():
    keys = pa.chunked_array([["u1", "", None, "ü-☃", "u1"], [], ["𝄞", "", "a\x00b", None]])
    encoded = encode_keys(keys)
    assert encoded.decode(encoded.codes).to_pylist() == keys.to_pylist()
    assert encoded.values.to_pylist() == ["", "a\x00b", "u1", "ü-☃", "𝄞", None]  # byte order, null last
    assert encoded.codes.to_list() == [2, 0, 5, 3, 2, 4, 0, 1, 5]


def test_key_codes_of_no_keys():
    for keys in (pa.chunked_array([], pa.string()), pa.chunked_array([pa.array([], pa.string())])):
        encoded = encode_keys(keys)
        assert encoded.cardinality == 0 and encoded.codes.len() == 0
