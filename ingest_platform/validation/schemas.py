"""pandera schemas (polars backend), one per event type, built from the event contract.

The polars backend validates a million rows in about 0.1 s with every failure collected (the
pandas backend takes 2 s), which keeps validation from being the slowest stage of the drain.
"""

from __future__ import annotations

import pandera.polars as pa
import polars as pl
from pandera.engines.polars_engine import DateTime

from ingest_platform.contract import MAX_ID_LENGTH, Action, FeedbackType

ID_LENGTH = {"min_value": 1, "max_value": MAX_ID_LENGTH}
RECEIVED_AT_SKEW = pl.duration(minutes=5)
UTC_MICROS = {"time_unit": "us", "time_zone": "UTC"}


class EventSchema(pa.DataFrameModel):
    """What every event has: an id, a parseable timestamp, and the gateway's stamps."""

    event_id: str = pa.Field(str_length=ID_LENGTH)
    timestamp: DateTime = pa.Field(nullable=False, dtype_kwargs=UTC_MICROS)
    received_at: DateTime = pa.Field(dtype_kwargs=UTC_MICROS)

    @pa.dataframe_check(error="timestamp is more than 5 minutes ahead of received_at")
    def timestamp_not_in_future(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(
            pl.col("timestamp").is_null() | (pl.col("timestamp") <= pl.col("received_at") + RECEIVED_AT_SKEW)
        )

    class Config:
        strict = False  # envelope columns (stream_id, api_key_id, raw) ride along unchecked


class UserInteractionSchema(EventSchema):
    user_id: str = pa.Field(str_length=ID_LENGTH)
    session_id: str = pa.Field(str_length=ID_LENGTH)
    track_id: str = pa.Field(str_length=ID_LENGTH)
    action: str = pa.Field(isin=[a.value for a in Action])


class FeedbackEventSchema(EventSchema):
    user_id: str = pa.Field(str_length=ID_LENGTH)
    recommendation_id: str = pa.Field(str_length=ID_LENGTH)
    feedback_type: str = pa.Field(isin=[t.value for t in FeedbackType])
    rating: float = pa.Field(nullable=False)

    @pa.dataframe_check(error="rating out of range: explicit ratings are 1-5, implicit 0-1")
    def rating_in_range(cls, data: pa.PolarsData) -> pl.LazyFrame:
        explicit = (pl.col("feedback_type") == FeedbackType.EXPLICIT) & pl.col("rating").is_between(1, 5)
        implicit = (pl.col("feedback_type") == FeedbackType.IMPLICIT) & pl.col("rating").is_between(0, 1)
        other = ~pl.col("feedback_type").is_in([t.value for t in FeedbackType])
        return data.lazyframe.select(explicit | implicit | other)


SCHEMAS: dict[str, type[EventSchema]] = {
    "user_interaction": UserInteractionSchema,
    "feedback_event": FeedbackEventSchema,
}
