"""Fuzzing POST /v1/events (hypothesis) and every HTTP operation of /openapi.json (schemathesis).

Short here (INGEST_FUZZ_EXAMPLES per target, default 150); the long run with >= 10k cases per
target: `python -m ingest_platform_tests.reliability.fuzzing --examples 10000`.
"""

from ingest_platform_tests.reliability.fuzzing import DEFAULT_EXAMPLES, FuzzCounts, fuzz_http, fuzz_openapi


def test_hostile_bodies_never_get_a_5xx_or_an_unreadable_rejection(logged_gateway, unlimited_key):
    gateway = logged_gateway()
    counts = FuzzCounts()
    fuzz_http(gateway, unlimited_key, DEFAULT_EXAMPLES, counts)
    assert counts.cases["http"] >= DEFAULT_EXAMPLES
    assert '"level":"error"' not in gateway.logs()  # no unhandled exception on the way either


def test_hostile_bodies_in_strict_mode(logged_gateway, unlimited_key):
    gateway = logged_gateway(gateway_strict=True, enable_feedback_events=False)
    counts = FuzzCounts()
    fuzz_http(gateway, unlimited_key, DEFAULT_EXAMPLES, counts)
    assert '"level":"error"' not in gateway.logs()


def test_openapi_operations_conform_and_never_fail(logged_gateway, unlimited_key):
    gateway = logged_gateway()
    counts = FuzzCounts()
    fuzz_openapi(gateway, unlimited_key, DEFAULT_EXAMPLES, counts)
    assert counts.total >= DEFAULT_EXAMPLES // 2
    assert any(label.startswith("openapi POST /v1/events negative") for label in counts.cases)
