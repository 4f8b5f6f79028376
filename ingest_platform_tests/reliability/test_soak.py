"""A 30-second soak in the suite (the real one: `python -m bench.soak --minutes 30`): a real
gateway, Redis and drain loop under steady load; nothing fails and memory does not climb."""

from bench.soak import report, soak


def test_steady_load_gets_no_errors_and_memory_stays_flat():
    result = soak(minutes=0.5, fraction=0.2, threads=2, size=20, sample_seconds=2.5, probe_seconds=2,
                  drain_interval=5, workers=1, retention_minutes=5)
    report(result)  # the table, for the log
    assert result["requests"] > 0 and result["errors"] == 0, result["error_kinds"]
    assert result["drain_errors"] == 0
    assert result["gateway_mb"][2] and result["drain_less_window_mb"][2], (result["gateway_mb"], result["drain_mb"])
    assert result["window"][2], result["window"]  # the dedup window at its designed 8 B per event
