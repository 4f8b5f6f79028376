"""The whole path with the real gateway process: HTTP -> Redis -> drain sensor -> lake + DLQ."""

from __future__ import annotations

from datetime import datetime, timezone

import duckdb
import httpx

from ingest_platform.settings import get_settings

from .helpers import feedback, interaction, run_drain_sensor


def test_mixed_batch_over_http_lands_every_event_exactly_once(gateway, api_key, platform_env):
    now = datetime.now(timezone.utc).isoformat()  # the gateway stamps received_at with the real clock
    events = ([interaction(track_id=f"t{i}", timestamp=now) for i in range(40)]
              + [interaction(action="Teleport", timestamp=now), interaction(user_id="a b", timestamp=now),
                 interaction(timestamp="tomorrow"), feedback(rating=0.0, timestamp=now),
                 feedback(feedback_type="implicit", rating=0.25, timestamp=now)])
    response = httpx.post(f"{gateway.url}/v1/events", json={"events": events},
                          headers={"Authorization": f"Bearer {api_key}"}, timeout=10)
    assert response.status_code == 202, response.text
    sent = {r["event_id"] for r in response.json()["results"]}
    assert len(sent) == len(events)

    run_drain_sensor()
    with duckdb.connect(str(get_settings().warehouse_path), read_only=True) as con:
        valid = {r[0] for r in con.execute(
            "SELECT event_id FROM user_interactions UNION ALL SELECT event_id FROM feedback_events").fetchall()}
        dead = dict(con.execute(
            "SELECT event_id, list_transform(failures, lambda f: f.check) FROM dead_letter_events").fetchall())
    assert len(valid) == 41 and len(dead) == 4
    assert valid | set(dead) == sent and not valid & set(dead)
    assert sorted(checks[0] for checks in dead.values()) == [
        "action_in_enum", "id_charset", "rating_in_range", "timestamp_parseable"]
