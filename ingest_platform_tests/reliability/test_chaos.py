"""Short chaos run in the suite (the long one: `python -m ingest_platform_tests.reliability.chaos`)."""

import os
import random

from ingest_platform_tests.reliability.chaos import run_chaos

SECONDS = float(os.environ.get("INGEST_CHAOS_SECONDS", "45"))


def test_every_acknowledged_event_lands_exactly_once_through_crashes(tmp_path):
    seed = int(os.environ.get("INGEST_CHAOS_SEED", random.randrange(1_000_000)))
    print(f"chaos seed {seed} (INGEST_CHAOS_SEED={seed} reproduces the fault schedule)")
    summary = run_chaos(tmp_path, SECONDS, seed)
    assert summary["acknowledged"] > 1000
    assert summary["acknowledged_invalid"] > 0
    assert summary["acknowledged_over_websocket"] > 0
    assert summary["missing"] == 0
    assert summary["duplicated"] == 0
    assert summary["unacknowledged_but_landed"] == 0
    assert summary["valid_in_dead_letters"] == 0
    assert summary["invalid_in_valid_rows"] == 0
