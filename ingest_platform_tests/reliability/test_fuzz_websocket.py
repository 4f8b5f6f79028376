"""Fuzzing the WebSocket: hostile text and binary frames on one connection (short here; the long
run: `python -m ingest_platform_tests.reliability.fuzzing --examples 10000 --targets websocket`)."""

from ingest_platform_tests.reliability.fuzzing import DEFAULT_EXAMPLES, FuzzCounts, fuzz_websocket


def test_hostile_frames_each_get_an_ack_or_error_and_the_socket_survives(logged_gateway, unlimited_key):
    gateway = logged_gateway()
    counts = FuzzCounts()
    fuzz_websocket(gateway, unlimited_key, DEFAULT_EXAMPLES, counts)
    assert counts.cases["websocket"] >= DEFAULT_EXAMPLES
    assert '"level":"error"' not in gateway.logs()
