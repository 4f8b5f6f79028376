"""The named fixes, and what a replay does when a fix cannot help."""

from __future__ import annotations

import pytest

from ingest_platform.dlq import fixes
from ingest_platform.dlq.inspection import LetterFilter
from ingest_platform.dlq.replay import replay_dead_letters
from ingest_platform.settings import get_settings

from .helpers import enqueue, interaction, run_drain_sensor


@pytest.mark.parametrize(("text", "iso"), [
    ("26/11/2026 10:00", "2026-11-26T10:00:00.000000Z"),
    ("26/11/2026 10:00:30", "2026-11-26T10:00:30.000000Z"),
    ("2026/11/26 10:00:30", "2026-11-26T10:00:30.000000Z"),
    ("26.11.2026 10:00:30", "2026-11-26T10:00:30.000000Z"),
    ("20261126T100030Z", "2026-11-26T10:00:30.000000Z"),
    ("1795687230", "2026-11-26T10:00:30.000000Z"),
    ("1795687230500", "2026-11-26T10:00:30.500000Z"),
    ("Thu, 26 Nov 2026 11:00:30 +0100", "2026-11-26T10:00:30.000000Z"),
])
def test_parse_odd_timestamp(text, iso):
    assert fixes.parse_odd_timestamp("user_interaction", {"timestamp": text}) == {"timestamp": iso}


def test_parse_odd_timestamp_leaves_what_it_does_not_know():
    assert fixes.parse_odd_timestamp("user_interaction", {"timestamp": "yesterday"}) == {"timestamp": "yesterday"}


def test_action_fixes():
    assert fixes.lowercase_action("user_interaction", {"action": " Play "}) == {"action": "play"}
    assert fixes.clean_action("user_interaction", {"action": "PLAY!"}) == {"action": "play"}
    assert fixes.clean_action("feedback_event", {"rating": 4}) == {"rating": 4}


def test_unknown_fix_is_refused():
    with pytest.raises(ValueError, match="no fix named 'nope'"):
        fixes.get_fix("nope")


def test_a_fix_that_breaks_leaves_the_letter_pending(platform_env, redis_client):
    @fixes.named_fix("explode", "Test only: always raises.")
    def explode(event_type, payload):
        raise RuntimeError("boom")

    try:
        enqueue(redis_client, [interaction(action="PLAY!")])
        run_drain_sensor()
        settings = get_settings()
        result = replay_dead_letters(redis_client, settings.lake_dir, settings.warehouse_path, LetterFilter(),
                                     fix="explode")
        assert result.injected == 0 and "fix explode failed" in result.not_replayable[0][1]
    finally:
        fixes.FIXES.pop("explode")
