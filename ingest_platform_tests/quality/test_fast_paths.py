"""The shortcuts that make validation fast give exactly the answers of the plain versions, and the
benchmark's DuckDB query is an exact equivalent of the pandera checks (so the comparison is fair)."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import duckdb
import polars as pl
import pytest

from bench.validation import assert_same_verdicts, duckdb_split, duckdb_sql, make_batch, re2_id_charset
from ingest_platform.validation import rules as r
from ingest_platform.validation.schemas import first_occurrences
from ingest_platform.validation.split import split_valid_rows

VALUES = [None, "", "a", "b", "ab", "ba", "abc", "xxx", "日本", "josé"]

# Keys that collide a lot, to exercise the exact string comparison behind the hash.
KEYS = {
    "hash": lambda value: value.hash(),
    "byte length (many collisions, null for null)": lambda value: value.str.len_bytes(),
    "one key for everything": lambda value: pl.lit(7, dtype=pl.UInt64),
}


@pytest.mark.parametrize("key", KEYS.values(), ids=KEYS.keys())
def test_first_occurrences_is_exactly_is_first_distinct(key):
    rnd = random.Random(5)
    for _ in range(200):
        values = [rnd.choice(VALUES) for _ in range(rnd.choice([0, 1, 2, 7, 40]))]
        frame = pl.DataFrame({"event_id": values}, schema={"event_id": pl.String})
        expected = frame.select(pl.col("event_id").is_first_distinct()).to_series()
        got = first_occurrences(frame.lazy(), "event_id", key).collect().to_series()
        assert got.to_list() == expected.to_list(), values


def test_split_keeps_stream_order_and_each_row_its_own_reasons():
    batch = make_batch(2_000, 0.01)  # 20 defective rows, five kinds of defect in turn
    split = split_valid_rows("user_interaction", batch, r.QualityRules())
    assert split.rejected["stream_id"].to_list() == sorted(split.rejected["stream_id"].to_list())
    assert split.valid["stream_id"].to_list() == sorted(split.valid["stream_id"].to_list())
    first = {row["stream_id"]: row["failures"][0]["check"] for row in split.rejected.iter_rows(named=True)}
    assert len(first) == 20
    defect_of = dict(zip(batch["stream_id"], batch.select(pl.int_range(pl.len()) // 100 % 5).to_series()))
    expected = {0: "action_in_enum", 1: r.TIMESTAMP_NOT_AHEAD, 2: r.ID_CHARSET, 3: r.EVENT_ID_UNIQUE,
                4: r.TIMESTAMP_PARSEABLE}
    assert {stream_id: expected[defect_of[stream_id]] for stream_id in first} == first


def test_bench_duckdb_charset_accepts_exactly_the_code_points_polars_accepts():
    """RE2's \\w is ASCII-only; the bench spells the class out, and it must be the same class."""
    points = pl.DataFrame({"c": [chr(p) for p in range(0x110000) if not 0xD800 <= p <= 0xDFFF]})
    ours = points.select(pl.col("c").str.contains(r.ID_CHARSET_PATTERN)).to_series()
    con = duckdb.connect()
    con.register("points", points.with_row_index("i").to_arrow())
    query = f"SELECT regexp_full_match(c, '{re2_id_charset()}') FROM points ORDER BY i"
    theirs = pl.Series([accepted for accepted, in con.execute(query).fetchall()])
    differ = points.filter(ours != theirs)["c"].to_list()
    assert not differ, [hex(ord(c)) for c in differ[:10]]
    assert ours.sum() > 100_000  # letters of every script, not just ASCII


def _hard_batch() -> pl.DataFrame:
    """Every defect the checks know, nulls in every column, ids in other scripts, and stream ids
    that sort differently as text than in stream order."""
    received = datetime(2026, 11, 26, 10, tzinfo=timezone.utc)
    rnd = random.Random(11)
    ids = [None, "", "x" * 128, "x" * 129, "a b", "josé_müller", "日本", "٣", "²", "😀", "e;1", "a\u200db", "ok.:@/+=#~-"]
    offsets = [None, -3600, 300, 301, -30 * 86_400, -30 * 86_400 - 1]
    rows = 400
    pick = lambda values: [rnd.choice(values) for _ in range(rows)]  # noqa: E731
    dt = pl.Datetime("us", "UTC")
    return pl.DataFrame({
        "event_id": [rnd.choice([*ids, "dup", "dup2", None]) if rnd.random() < 0.3 else f"e{i}" for i in range(rows)],
        "user_id": pick([*ids, "u1"] * 2),
        "session_id": pick([*ids, "s1"] * 2),
        "track_id": pick([*ids, "t1"] * 2),
        "action": pick(["play", "skip", "PLAY", "like!", "", None]),
        "timestamp": [None if o is None else received + timedelta(seconds=o) for o in pick(offsets)],
        "received_at": [None if rnd.random() < 0.02 else received for _ in range(rows)],
        "api_key_id": ["k"] * rows,
        "stream_id": [f"{9 + i // 50}-0/{i % 50}" for i in range(rows)],  # "10-0/..." sorts before "9-0/..."
        "raw_payload": ['{"user_interaction": {"timestamp": "odd"}}'] * rows,
    }, schema_overrides={"timestamp": dt, "received_at": dt})


def test_bench_duckdb_query_finds_the_same_rows_for_the_same_reasons():
    batch = _hard_batch()
    rules = r.QualityRules()
    split = split_valid_rows("user_interaction", batch, rules)
    failing, valid = duckdb_split(duckdb.connect(), duckdb_sql(rules), batch.with_row_index("__row"))
    assert failing.height + valid.height == batch.height
    assert split.rejected.height > 300  # the batch is meant to be hard
    assert_same_verdicts(split.rejected, failing)


def test_assert_same_verdicts_notices_a_difference():
    batch = _hard_batch()
    split = split_valid_rows("user_interaction", batch, r.QualityRules())
    fewer = split.rejected.slice(1)
    with pytest.raises(AssertionError, match="1 rows judged differently"):
        assert_same_verdicts(split.rejected, fewer)
