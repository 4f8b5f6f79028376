"""The drain's dedup window holds 64-bit hashes of the landed ids, not the ids: hash hits must be
verified exactly against the claim log, a fresh process must rebuild the window from Redis, and the
window must stay small. Hash functions are injected (`_Windows(hash_ids=...)`) to force collisions."""

from __future__ import annotations

import subprocess
import sys

import polars as pl
import pytest

from ingest_platform.drain import dedup
from ingest_platform_tests.drain.helpers import STREAM, hour_ms

H10, H11 = hour_ms(hour=10), hour_ms(hour=11)


def constant_hash(ids: pl.Series) -> pl.Series:
    """Every id collides with every other one."""
    return pl.repeat(7, len(ids), dtype=pl.UInt64, eager=True)


def four_buckets(ids: pl.Series) -> pl.Series:
    """Ids collide in four classes (differing in the top bits, which the window keeps), so runs
    hold long spans of equal hashes."""
    return ids.hash(0) % 4 * (1 << 62)


@pytest.fixture
def windows(monkeypatch):
    """Install a fresh process-wide window cache built with a given hash function."""
    def install(hash_ids=None) -> dedup._Windows:
        fresh = dedup._Windows(hash_ids)
        monkeypatch.setattr(dedup, "_windows", fresh)
        return fresh
    return install


def valid(*ids: str) -> list[tuple[str, str, str]]:
    return [("v", i, "") for i in ids]


def claim_history(client) -> list[list[int]]:
    """A sequence of batches over two hours: retries within a batch, across batches, across the
    hour boundary, and dead letters before and after a valid occurrence of their id."""
    batches = [
        (H10, "a", valid("a1", "a2", "a3", "a2") + [("d", "bad1", "x")]),  # a2 repeats in the batch
        (H10, "b", valid("b1", "a1", "b2") + [("d", "bad1", "x"), ("d", "a3", "y")]),
        (H10, "c", valid("c1", "bad1", "c2", "b2")),  # bad1 fixed: lands once
        # d1's letter after its valid occurrence in the same batch is an id reused for another
        # event (validation made it a letter failing event_id_unique_in_batch): it lands
        (H11, "d", valid("d1", "a2", "c1", "bad1") + [("d", "d1", "z"), ("d", "new", "w")]),
        (H11, "e", valid("e1", "d1", "new", "e2")),  # `new` was only a dead letter: lands valid
    ]
    return [dedup.claim(client, STREAM, hour, name, occ) for hour, name, occ in batches]


EXPECTED_DROPS = [[3], [1, 3, 4], [3], [1, 2, 3], [1]]


@pytest.mark.parametrize("hash_ids", [None, four_buckets, constant_hash], ids=["real", "mod4", "constant"])
def test_collisions_never_drop_a_real_event_and_duplicates_still_drop(redis_client, windows, hash_ids):
    windows(hash_ids)
    assert claim_history(redis_client) == EXPECTED_DROPS


@pytest.mark.parametrize("hash_ids", [four_buckets, constant_hash], ids=["mod4", "constant"])
def test_a_large_batch_under_collisions_matches_the_exact_answer(redis_client, windows, hash_ids):
    ids = [f"id-{i}" for i in range(3000)]
    first, second = valid(*ids[:2000]), valid(*ids[1500:])  # 500 retries of the first batch
    windows(hash_ids)
    assert dedup.claim(redis_client, STREAM, H10, "first", first) == []
    assert dedup.claim(redis_client, STREAM, H10, "second", second) == list(range(500))


def test_a_fresh_process_rebuilds_the_window_from_the_log(redis_client, windows):
    windows()
    assert claim_history(redis_client)[:3] == EXPECTED_DROPS[:3]
    old = dedup._windows
    fresh = windows()  # a new process: a new seed, nothing cached
    assert fresh.hash_ids(pl.Series(["a1"])).item() != old.hash_ids(pl.Series(["a1"])).item()
    later = [(H11, "d", valid("d1", "a2", "c1", "bad1") + [("d", "d1", "z"), ("d", "new", "w")]),
             (H11, "e", valid("e1", "d1", "new", "e2"))]
    assert [dedup.claim(redis_client, STREAM, h, n, o) for h, n, o in later] == EXPECTED_DROPS[3:]
    current, before = fresh.load(redis_client, STREAM, H11)
    assert sum(len(run) for run in before.runs) == 8  # hour 10 landed a1-3, b1-2, c1-2 and bad1
    assert before.length == redis_client.llen(before.key)


def test_another_process_decides_the_same_from_the_redis_log(redis_server, redis_client, windows):
    windows()
    assert claim_history(redis_client)[:3] == EXPECTED_DROPS[:3]
    script = ("import sys; from ingest_platform.drain import dedup; import redis; "
              "c = redis.Redis.from_url(sys.argv[1]); "
              f"print(dedup.claim(c, {STREAM!r}, {H11}, 'd', "
              "[('v','d1',''),('v','a2',''),('v','c1',''),('v','bad1',''),('d','d1','z'),('d','new','w')]))")
    out = subprocess.run([sys.executable, "-c", script, redis_server.url], capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.strip() == str(EXPECTED_DROPS[3])
    # and this process, whose window did not see that claim, reads it from the log
    assert dedup.claim(redis_client, STREAM, H11, "e", valid("e1", "d1", "new", "e2")) == EXPECTED_DROPS[4]


def test_claims_of_the_set_based_format_are_still_duplicates(redis_client, windows):
    windows(constant_hash)
    redis_client.sadd(dedup.hour_key(STREAM, H10, "v"), "old1", "old2")
    redis_client.sadd(dedup.hour_key(STREAM, H10, "d"), "oldbad:x")
    occurrences = valid("old1", "n1", "old2", "n2") + [("d", "oldbad", "x"), ("d", "oldbad", "y")]
    assert dedup.claim(redis_client, STREAM, H11, "up", occurrences) == [0, 2, 4]


def test_a_log_deleted_under_a_decision_is_read_again(redis_client, windows):
    fresh = windows(constant_hash)
    assert dedup.claim(redis_client, STREAM, H10, "a", valid("a1", "a2")) == []
    current, _ = fresh.load(redis_client, STREAM, H10)
    redis_client.delete(current.key)  # e.g. forgotten, then recreated by another drain
    probe = dedup._Probe.of(pl.Series(["a1"]), fresh.hash_ids)
    with pytest.raises(dedup._LogReplaced):
        current.known(probe, dedup._ClaimReader(redis_client))
    assert dedup.claim(redis_client, STREAM, H10, "b", valid("a1", "b1")) == []  # its claims are gone


def test_the_window_holds_8_bytes_per_event_whatever_the_id_length(redis_client, windows):
    fresh = windows()
    per_batch = 250_000
    for b in range(4):  # 1M long ids (60 bytes), claimed in four batches
        ids = pl.int_range(b * per_batch, (b + 1) * per_batch, eager=True).cast(pl.String)
        ids = ("user-interaction-0123456789abcdef-0123456789abcdef-" + ids.str.zfill(9)).alias("event_id")
        frame = pl.DataFrame({"kind": pl.repeat("v", per_batch, eager=True), "event_id": ids,
                              "digest": pl.repeat("", per_batch, eager=True)})
        assert dedup.claim_frame(redis_client, STREAM, H10, f"m{b}", frame) == []
    current, _ = fresh.load(redis_client, STREAM, H10)
    assert sum(len(run) for run in current.runs) == 4 * per_batch
    assert current.nbytes() / (4 * per_batch) < 10  # one UInt64 per event (the ids: 76 B each)
    rebuilt, _ = windows().load(redis_client, STREAM, H10)  # the same from the log, in pages
    assert sum(len(run) for run in rebuilt.runs) == 4 * per_batch
    assert rebuilt.nbytes() / (4 * per_batch) < 10


@pytest.mark.parametrize("hash_ids", [None, constant_hash], ids=["real", "constant"])
def test_log_elements_past_the_last_slot_are_all_read_on_a_hit(redis_client, windows, monkeypatch, hash_ids):
    monkeypatch.setattr(dedup, "_SLOTS", 4)  # elements 3, 4, 5, ... share the last slot
    monkeypatch.setattr(dedup, "_LAST_AT", 3)
    windows(hash_ids)
    for b in range(6):
        assert dedup.claim(redis_client, STREAM, H10, f"s{b}", valid(f"s{b}-0", f"s{b}-1")) == []
    retries = valid(*(f"s{b}-1" for b in range(6)), "fresh")
    assert dedup.claim(redis_client, STREAM, H10, "retry", retries) == [0, 1, 2, 3, 4, 5]
    windows(hash_ids)  # a fresh process, rebuilding the saturated entries from the log
    assert dedup.claim(redis_client, STREAM, H11, "next", valid("s5-0", "fresh", "s0-0", "n")) == [0, 1, 2]


def test_a_fresh_process_reads_a_long_log_in_pages(redis_client, windows):
    windows()
    for b in range(150):  # more elements than one LRANGE page
        assert dedup.claim(redis_client, STREAM, H10, f"p{b}", valid(f"p{b}")) == []
    fresh = windows(four_buckets)
    retries = valid("p0", "p63", "p64", "p149", "q")
    assert dedup.claim(redis_client, STREAM, H10, "again", retries) == [0, 1, 2, 3]
    current, _ = fresh.load(redis_client, STREAM, H10)
    assert sum(len(run) for run in current.runs) == 151 and current.length == 152  # + the header
