"""Every dataset that processing/ derives, with its columns described once.

The warehouse views, the Dagster column schemas, the Parquet files (results are cast to these
schemas before they are written) and docs/downstream.md all come from this list. A column with
`computed` SQL is not stored: the warehouse view computes it from the stored columns when read
(the feature views' ratios and scores: cheap to compute, and ~30% of the cost of writing them).

Layouts (under `<lake>/<name>/`):
- `snapshot`: one file, replaced atomically (reference data).
- `hourly`: `date=YYYY-MM-DD/hour=HH/part.parquet`, one file per hour partition.
- `daily`: `date=YYYY-MM-DD/part.parquet`, one file per day partition.
- `versioned`: `v<stamp>/*.parquet` plus a `current` symlink swapped atomically; every rebuild is a
  full rebuild of the whole history (feature views), and readers follow the symlink (the previous
  version is kept for readers still scanning it).
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from ingest_platform.contract import FEEDBACK_EVENT, USER_INTERACTION

TS = pa.timestamp("us", tz="UTC")
DUCKDB_TYPES = {pa.string(): "VARCHAR", pa.int64(): "BIGINT", pa.int32(): "INTEGER", pa.float64(): "DOUBLE",
                pa.date32(): "DATE", pa.bool_(): "BOOLEAN", TS: "TIMESTAMPTZ"}


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    description: str
    computed: str | None = None  # SQL over the stored columns, evaluated when read; None: stored

    @property
    def select_sql(self) -> str:
        """How the warehouse view selects the column from the dataset's files."""
        if self.computed is None:
            return self.name
        return f"CAST({self.computed} AS {DUCKDB_TYPES[self.type]}) AS {self.name}"


@dataclass(frozen=True)
class DerivedDataset:
    name: str
    layout: str  # snapshot | hourly | daily | versioned
    description: str
    columns: tuple[Column, ...]

    @property
    def schema(self) -> pa.Schema:
        return pa.schema([pa.field(c.name, c.type) for c in self.columns])

    @property
    def stored_columns(self) -> tuple[Column, ...]:
        """The columns in the dataset's Parquet files (all but the computed ones)."""
        return tuple(c for c in self.columns if c.computed is None)

    @property
    def stored_schema(self) -> pa.Schema:
        return pa.schema([pa.field(c.name, c.type) for c in self.stored_columns])

    @property
    def view_columns_sql(self) -> str:
        """The select list of the warehouse view over the files: `*`, or with computed columns,
        every column in order (stored ones by name, computed ones by their SQL)."""
        if all(c.computed is None for c in self.columns):
            return "*"
        return ", ".join(c.select_sql for c in self.columns)

    def root(self, lake: Path) -> Path:
        return lake / self.name

    def glob(self, lake: Path) -> str:
        pattern = {"snapshot": "*.parquet", "hourly": "date=*/hour=*/*.parquet",
                   "daily": "date=*/*.parquet", "versioned": "current/*.parquet"}[self.layout]
        return str(self.root(lake) / pattern)

    def has_files(self, lake: Path) -> bool:
        return bool(glob.glob(self.glob(lake)))

    @property
    def hive_types(self) -> str:
        return {"hourly": "{'date': DATE, 'hour': INTEGER}", "daily": "{'date': DATE}"}.get(self.layout, "")


def _c(name: str, type_: pa.DataType, description: str) -> Column:
    return Column(name, type_, description)


def _event_columns(event_type) -> tuple[Column, ...]:
    """The landed event's own columns, described (types come from the contract)."""
    described = {
        "event_id": "Unique event id (client idempotency key or gateway UUIDv7).",
        "user_id": "The listener.", "session_id": "Client session the event belongs to.",
        "track_id": "The track acted on.", "action": "play, pause, skip, like or dislike.",
        "timestamp": "When the event happened (client clock, normalised to UTC).",
        "recommendation_id": "The served recommendation this feedback is about.",
        "feedback_type": "explicit (a 1-5 rating) or implicit (a 0-1 signal).",
        "rating": "Explicit: stars 1-5. Implicit: 0-1, where >= 0.5 counts as positive.",
        "received_at": "When the gateway accepted it (server clock, UTC).",
        "api_key_id": "Id of the API key that sent it.",
        "stream_id": "Where it was buffered in Redis (<entry id>/<index>).",
    }
    return tuple(_c(f.name, f.type, described[f.name]) for f in event_type.arrow_schema)


# --- reference data ------------------------------------------------------------------------------

USERS = DerivedDataset("users", "snapshot", "Reference: listeners (from reference/users.parquet).", (
    _c("user_id", pa.string(), "Listener id, as in events."),
    _c("country", pa.string(), "ISO 3166 alpha-2 country."),
    _c("subscription_tier", pa.string(), "free, premium or family."),
    _c("signup_date", pa.date32(), "Account creation date."),
    _c("birth_year", pa.int32(), "Self-declared birth year."),
))

TRACKS = DerivedDataset("tracks", "snapshot", "Reference: the catalogue (from reference/tracks.parquet).", (
    _c("track_id", pa.string(), "Track id, as in events."),
    _c("title", pa.string(), "Track title."),
    _c("artist", pa.string(), "Performing artist."),
    _c("genre", pa.string(), "Primary genre."),
    _c("duration_ms", pa.int64(), "Track length in milliseconds."),
    _c("release_year", pa.int32(), "Year of release."),
))

RECOMMENDATIONS = DerivedDataset(
    "recommendations", "snapshot", "Reference: recommendations served (from reference/recommendations.parquet).", (
        _c("recommendation_id", pa.string(), "Recommendation id, as in feedback events."),
        _c("user_id", pa.string(), "Listener it was served to."),
        _c("track_id", pa.string(), "Track recommended."),
        _c("model_version", pa.string(), "Recommender model that produced it."),
        _c("rank", pa.int32(), "Position in the served list (1 = top)."),
        _c("served_at", TS, "When it was served (UTC)."),
    ))

REFERENCE_DATASETS = (USERS, TRACKS, RECOMMENDATIONS)

# --- enrichment ----------------------------------------------------------------------------------
# Columns that enrichment adds; with ENABLE_EVENT_ENRICHMENT=false downstream SQL sees them as NULL.

INTERACTION_ENRICHMENT = (
    _c("event_hour", TS, "timestamp truncated to the hour (UTC)."),
    _c("hour_of_day", pa.int32(), "0-23, UTC."),
    _c("day_of_week", pa.int32(), "ISO day of week, 1 = Monday ... 7 = Sunday (UTC)."),
    _c("country", pa.string(), "users.country (NULL when the user is not in the reference data)."),
    _c("subscription_tier", pa.string(), "users.subscription_tier."),
    _c("artist", pa.string(), "tracks.artist (NULL when the track is not in the reference data)."),
    _c("genre", pa.string(), "tracks.genre."),
    _c("track_duration_ms", pa.int64(), "tracks.duration_ms."),
    _c("session_start", TS, "Earliest event of the session (looking back at most 6 h)."),
    _c("position_in_session", pa.int64(), "How many plays the session had up to and including this event (the "
       "track's place in the listening queue; 0 for events before the first play)."),
    _c("events_so_far", pa.int64(), "Events of the session strictly before this one."),
    _c("seconds_to_stop", pa.float64(), "Plays only: seconds until the session's next pause or skip, if that comes "
       "before the next play; else NULL."),
    _c("listened_seconds", pa.float64(), "Plays only: seconds until the next play, pause or skip in the session "
       "(NULL while none has landed)."),
    _c("completion_ratio", pa.float64(), "Plays only: listened_seconds / track duration, capped at 1."),
)

FEEDBACK_ENRICHMENT = (
    _c("event_hour", TS, "timestamp truncated to the hour (UTC)."),
    _c("hour_of_day", pa.int32(), "0-23, UTC."),
    _c("day_of_week", pa.int32(), "ISO day of week, 1 = Monday (UTC)."),
    _c("country", pa.string(), "users.country."),
    _c("subscription_tier", pa.string(), "users.subscription_tier."),
    _c("track_id", pa.string(), "recommendations.track_id (NULL when the recommendation is unknown)."),
    _c("model_version", pa.string(), "recommendations.model_version."),
    _c("rank", pa.int32(), "recommendations.rank."),
    _c("served_at", TS, "recommendations.served_at."),
    _c("seconds_since_served", pa.float64(), "timestamp - served_at, in seconds."),
    _c("genre", pa.string(), "tracks.genre of the recommended track."),
)

ENRICHED_USER_INTERACTIONS = DerivedDataset(
    "enriched_user_interactions", "hourly",
    "Every landed user interaction (1:1, same arrival-hour partition) with user/track context, time and "
    "session features, and listening behaviour derived from the session's sequence.",
    _event_columns(USER_INTERACTION) + INTERACTION_ENRICHMENT,
)

ENRICHED_FEEDBACK_EVENTS = DerivedDataset(
    "enriched_feedback_events", "hourly",
    "Every landed feedback event (1:1, same arrival-hour partition) with the served recommendation "
    "(model version, rank, track), user context and time features.",
    _event_columns(FEEDBACK_EVENT) + FEEDBACK_ENRICHMENT,
)

# --- aggregates ----------------------------------------------------------------------------------

TRACK_HOURLY_STATS = DerivedDataset(
    "track_hourly_stats", "hourly", "Per track and event hour: plays, skips, reactions and listeners.", (
        _c("event_hour", TS, "Hour of the events (UTC), by event timestamp."),
        _c("track_id", pa.string(), "Track."),
        _c("plays", pa.int64(), "play events."),
        _c("pauses", pa.int64(), "pause events."),
        _c("skips", pa.int64(), "skip events."),
        _c("likes", pa.int64(), "like events."),
        _c("dislikes", pa.int64(), "dislike events."),
        _c("unique_listeners", pa.int64(), "Distinct users with any event on the track."),
        _c("skip_rate", pa.float64(), "skips / plays (NULL without plays)."),
        _c("like_ratio", pa.float64(), "likes / (likes + dislikes) (NULL without reactions)."),
    ))

USER_DAILY_ENGAGEMENT = DerivedDataset(
    "user_daily_engagement", "daily", "Per user and UTC day: activity, sessions and listening.", (
        _c("event_date", pa.date32(), "Day of the events (UTC)."),
        _c("user_id", pa.string(), "Listener."),
        _c("events", pa.int64(), "All interactions."),
        _c("plays", pa.int64(), "play events."),
        _c("skips", pa.int64(), "skip events."),
        _c("likes", pa.int64(), "like events."),
        _c("dislikes", pa.int64(), "dislike events."),
        _c("sessions", pa.int64(), "Distinct sessions."),
        _c("unique_tracks", pa.int64(), "Distinct tracks."),
        _c("skip_rate", pa.float64(), "skips / plays."),
        _c("listened_seconds", pa.float64(), "Sum of enriched listened_seconds (NULL when enrichment is off)."),
        _c("mean_completion_ratio", pa.float64(), "Mean completion_ratio of plays (NULL when enrichment is off)."),
        _c("first_event_at", TS, "First event of the day."),
        _c("last_event_at", TS, "Last event of the day."),
    ))

RECOMMENDATION_FEEDBACK_STATS = DerivedDataset(
    "recommendation_feedback_stats", "hourly",
    "Per event hour, model version and rank: how served recommendations were received.", (
        _c("event_hour", TS, "Hour of the feedback (UTC)."),
        _c("model_version", pa.string(), "Recommender model (NULL: recommendation unknown or enrichment off)."),
        _c("rank", pa.int32(), "Served rank (NULL: unknown or enrichment off)."),
        _c("feedback_events", pa.int64(), "All feedback events."),
        _c("explicit_count", pa.int64(), "Explicit ratings."),
        _c("explicit_mean_rating", pa.float64(), "Mean explicit rating (1-5)."),
        _c("implicit_count", pa.int64(), "Implicit signals."),
        _c("implicit_positive_rate", pa.float64(), "Share of implicit signals with rating >= 0.5."),
        _c("unique_users", pa.int64(), "Distinct users who gave feedback."),
    ))

GENRE_HOURLY_TRENDS = DerivedDataset(
    "genre_hourly_trends", "hourly", "Per event hour and genre: listening volume and share.", (
        _c("event_hour", TS, "Hour of the events (UTC)."),
        _c("genre", pa.string(), "tracks.genre ('unknown' for tracks missing from the reference or with "
           "enrichment off)."),
        _c("plays", pa.int64(), "play events."),
        _c("skips", pa.int64(), "skip events."),
        _c("likes", pa.int64(), "like events."),
        _c("unique_listeners", pa.int64(), "Distinct users."),
        _c("play_share", pa.float64(), "This genre's plays / all plays in the hour."),
        _c("skip_rate", pa.float64(), "skips / plays."),
    ))

# --- feature views -------------------------------------------------------------------------------

FEATURE_WINDOWS = {"1h": 1, "24h": 24, "7d": 24 * 7, "30d": 24 * 30}  # window name -> hours


def _windowed(prefix: str, metrics: dict[str, str], computed: dict[str, str]) -> tuple[Column, ...]:
    """A column per window and metric: the counts stored, the `computed` ones (SQL over the
    window's counts, named in braces) computed when read."""
    columns = []
    for window in FEATURE_WINDOWS:
        names = {metric: f"{prefix}{metric}_{window}" for metric in metrics}
        for metric, description in metrics.items():
            type_ = pa.float64() if metric in computed else pa.int64()
            sql = computed[metric].format(**names) if metric in computed else None
            columns.append(Column(names[metric], type_, f"{description} over the {window} before "
                                  "feature_timestamp.", sql))
    return tuple(columns)


# Derived features, from the window's counts, computed when read (DuckDB's `/` on BIGINT counts gives
# a DOUBLE, as when they were stored; the view casts each to its catalogue type).
SKIP_RATE = "{skips} / nullif({plays}, 0)"


FEATURE_TIMESTAMP = _c("feature_timestamp", TS, "End of an hour in which the entity had activity; the values "
                       "summarise events with timestamp < this instant, so a label at time t may use rows with "
                       "feature_timestamp <= t.")

USER_FEATURES = DerivedDataset(
    "user_features", "versioned", "Feature view over entity user_id: activity per window, full history.",
    (_c("user_id", pa.string(), "Entity: the listener."), FEATURE_TIMESTAMP) + _windowed("user_", {
        "events": "Interactions", "plays": "Plays", "skips": "Skips", "likes": "Likes",
        "skip_rate": "skips / plays (NULL without plays)",
    }, {"skip_rate": SKIP_RATE}),
)

TRACK_FEATURES = DerivedDataset(
    "track_features", "versioned", "Feature view over entity track_id: popularity and reception per window.",
    (_c("track_id", pa.string(), "Entity: the track."), FEATURE_TIMESTAMP) + _windowed("track_", {
        "plays": "Plays", "skips": "Skips", "likes": "Likes", "dislikes": "Dislikes",
        "skip_rate": "skips / plays (NULL without plays)",
        "like_ratio": "likes / (likes + dislikes) (NULL without reactions)",
    }, {"skip_rate": SKIP_RATE, "like_ratio": "{likes} / nullif({likes} + {dislikes}, 0)"}),
)

USER_TRACK_AFFINITY = DerivedDataset(
    "user_track_affinity", "versioned", "Feature view over entities (user_id, track_id): how a listener "
    "treats a track, per window.",
    (_c("user_id", pa.string(), "Entity: the listener."), _c("track_id", pa.string(), "Entity: the track."),
     FEATURE_TIMESTAMP) + _windowed("affinity_", {
        "plays": "Plays of the track by the user", "skips": "Skips", "likes": "Likes", "dislikes": "Dislikes",
        "score": "plays + 3 * likes - 2 * skips - 3 * dislikes",
    }, {"score": "{plays} + 3 * {likes} - 2 * {skips} - 3 * {dislikes}"}),
)

FEATURE_VIEWS = (USER_FEATURES, TRACK_FEATURES, USER_TRACK_AFFINITY)

DERIVED_DATASETS: tuple[DerivedDataset, ...] = (
    *REFERENCE_DATASETS, ENRICHED_USER_INTERACTIONS, ENRICHED_FEEDBACK_EVENTS, TRACK_HOURLY_STATS,
    USER_DAILY_ENGAGEMENT, RECOMMENDATION_FEEDBACK_STATS, GENRE_HOURLY_TRENDS, *FEATURE_VIEWS,
)

BY_NAME = {d.name: d for d in DERIVED_DATASETS}


def catalog_markdown() -> str:
    """Every derived dataset and its columns as Markdown (pasted into docs/downstream.md; a test
    checks the two agree)."""
    lines = []
    for dataset in DERIVED_DATASETS:
        lines += [f"### `{dataset.name}`", "", f"{dataset.description} Layout: `{dataset.layout}`.", "",
                  "| column | type | meaning |", "|---|---|---|"]
        lines += [f"| `{c.name}` | {c.type} | {c.description}"
                  + (f" Computed when read: `{c.computed}`." if c.computed else "") + " |" for c in dataset.columns]
        if dataset.layout == "hourly":
            meaning = ("the hour the events landed in (arrival)" if dataset.name.startswith("enriched_")
                       else "the event hour (same as event_hour)")
            lines.append(f"| `date`, `hour` | date, int32 | Partition (from the path): {meaning}. |")
        elif dataset.layout == "daily":
            lines.append("| `date` | date | Partition (from the path). |")
        lines.append("")
    return "\n".join(lines)
