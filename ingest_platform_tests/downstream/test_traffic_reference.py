"""The synthetic traffic refers to the reference catalogue it writes."""

from __future__ import annotations

from collections import Counter

import pyarrow.parquet as pq

from ingest_platform.traffic.generator import TrafficGenerator


def test_traffic_refers_to_a_consistent_catalogue(tmp_path):
    generator = TrafficGenerator(invalid_ratio=0.0)
    directory = generator.catalogue.write_reference(tmp_path)
    users = set(pq.read_table(directory / "users.parquet")["user_id"].to_pylist())
    tracks = set(pq.read_table(directory / "tracks.parquet")["track_id"].to_pylist())
    recommendations = pq.read_table(directory / "recommendations.parquet").to_pylist()
    assert {r["user_id"] for r in recommendations} <= users and {r["track_id"] for r in recommendations} <= tracks
    served_to = {r["recommendation_id"]: r["user_id"] for r in recommendations}

    events = [generator.event() for _ in range(20_000)]
    plays = Counter()
    sessions = Counter()
    for event in events:
        if "feedback_event" in event:
            feedback = event["feedback_event"]
            assert served_to[feedback["recommendation_id"]] == feedback["user_id"]
        else:
            interaction = event["user_interaction"]
            assert interaction["user_id"] in users and interaction["track_id"] in tracks
            sessions[interaction["session_id"]] += 1
            plays[interaction["track_id"]] += interaction["action"] == "play"
    # Popularity is skewed: the top 1% of tracks get a large share of the plays.
    top = sum(count for _, count in plays.most_common(len(tracks) // 100))
    assert top / sum(plays.values()) > 0.25
    # Sessions of plausible length: several events on average, none absurdly long.
    finished = [n for n in sessions.values()]
    assert 3 < sum(finished) / len(finished) < 60 and max(finished) < 200
    # The same seed writes the same catalogue (a restarted dev stack keeps its references).
    again = TrafficGenerator().catalogue.reference_tables()
    assert again["tracks"].equals(pq.read_table(directory / "tracks.parquet"))
