"""The split's invariant on arbitrary batches: every row in exactly one place, every rejected row
with a reason, and the valid side passes validation on its own."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest_platform.validation import rules as r
from ingest_platform.validation.split import split_valid_rows

from .helpers import feedback, interaction
from .test_checks import drain_frame

ids = st.sampled_from(["u1", "x" * 128, "x" * 129, "", "a b", "josé", "e;1", "t-9"])
timestamps = st.sampled_from(["2026-11-26T09:00:00Z", "2026-11-26T10:05:00Z", "2026-11-26T10:05:01Z",
                              "2026-10-01T00:00:00Z", "not a time", "2026-11-26T10:00:00+01:00"])
interactions = st.builds(lambda user, track, action, ts, event_id: interaction(
    user_id=user, track_id=track, action=action, timestamp=ts, **({"event_id": event_id} if event_id else {})),
    ids, ids, st.sampled_from(["play", "skip", "PLAY", "like!", ""]), timestamps,
    st.one_of(st.none(), st.sampled_from(["e1", "e2", "e3"])))
feedbacks = st.builds(lambda user, kind, rating, ts: feedback(user_id=user, feedback_type=kind, rating=rating, timestamp=ts),
                      ids, st.sampled_from(["explicit", "implicit", "meh"]),
                      st.sampled_from([0.0, 0.5, 1.0, 3.5, 5.0, 5.5, -1.0]), timestamps)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.lists(interactions, min_size=1, max_size=30), st.lists(feedbacks, min_size=1, max_size=30)))
def test_every_row_lands_in_exactly_one_place(events):
    name, frame = drain_frame(events)
    split = split_valid_rows(name, frame, r.QualityRules())
    assert split.valid.height + split.rejected.height == frame.height
    assert set(split.valid["stream_id"]).isdisjoint(split.rejected["stream_id"])
    assert set(split.valid["stream_id"]) | set(split.rejected["stream_id"]) == set(frame["stream_id"])
    assert all(len(failures) >= 1 and all(f["message"] for f in failures)
               for failures in split.rejected["failures"].to_list())
    again = split_valid_rows(name, split.valid, r.QualityRules())
    assert again.rejected.height == 0
