"""What validation checks, named once: check names, their human messages, and the rule families
that Dagster shows as asset checks.

A failure is (check, column, value, message). `check` is one of the names below and is what
`dlq stats`, `dlq list --check` and the asset-check metadata count by; `message` is for people.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from ingest_platform.contract import EVENT_TYPES, MAX_ID_LENGTH, Action, FeedbackType

# Ids end up in SQL filters, URLs, Redis keys of the online store and log lines: letters and digits
# of any script plus a few separators; no whitespace, quotes, brackets, control characters or emoji.
ID_CHARSET_PATTERN = r"^[\w.:@/+=#~-]*$"
# The same rule as a search for one character outside the set: about twice as fast on polars.
ID_FORBIDDEN_CHARACTER = r"[^\w.:@/+=#~-]"
ID_CHARSET_TEXT = "letters, digits and . _ : @ / + = # ~ -"

# Columns whose value must come from an enum of the contract: column -> allowed values.
ENUM_COLUMNS: dict[str, tuple[str, ...]] = {
    "action": tuple(a.value for a in Action),
    "feedback_type": tuple(t.value for t in FeedbackType),
}
RATING_RANGES: dict[str, tuple[float, float]] = {
    FeedbackType.EXPLICIT.value: (1.0, 5.0),  # stars
    FeedbackType.IMPLICIT.value: (0.0, 1.0),  # a probability-like signal (completion share, click)
}

# --- check names (the `check` of a failure) ---------------------------------------------------
REQUIRED = "required"
ID_LENGTH = "id_length"
ID_CHARSET = "id_charset"
EVENT_ID_UNIQUE = "event_id_unique_in_batch"
RATING_IN_RANGE = "rating_in_range"
TIMESTAMP_PARSEABLE = "timestamp_parseable"
TIMESTAMP_NOT_AHEAD = "timestamp_not_ahead"
TIMESTAMP_WITHIN_HORIZON = "timestamp_within_horizon"


def enum_check(column: str) -> str:
    return f"{column}_in_enum"


def id_columns(event_type: str) -> tuple[str, ...]:
    """event_id and every contract field that names something (`*_id`)."""
    fields = EVENT_TYPES[event_type].payload_fields
    return ("event_id", *(f for f in fields if f.endswith("_id")))


@dataclass(frozen=True)
class QualityRules:
    """The tunable limits (from Settings). Both are measured from the event's own received_at, so
    the same rows always get the same verdict, however late a drain (or its retry) runs."""

    max_ahead: timedelta = timedelta(minutes=5)
    max_age: timedelta = timedelta(days=30)

    @classmethod
    def from_settings(cls) -> "QualityRules":
        from ingest_platform.settings import get_settings

        settings = get_settings()
        return cls(timedelta(seconds=settings.max_event_ahead_seconds),
                   timedelta(hours=settings.max_event_age_hours))


# --- rule families: one Dagster asset check per family and event asset ------------------------


@dataclass(frozen=True)
class RuleFamily:
    name: str  # the asset check's name
    description: str
    checks: tuple[str, ...]

    def applies_to(self, event_type: str) -> bool:
        return any(c in checks_of(event_type) for c in self.checks)


def checks_of(event_type: str) -> tuple[str, ...]:
    """Every check name validation can report for `event_type`."""
    fields = EVENT_TYPES[event_type].payload_fields
    enums = tuple(enum_check(c) for c in ENUM_COLUMNS if c in fields)
    rating = (RATING_IN_RANGE,) if "rating" in fields else ()
    return (REQUIRED, ID_LENGTH, ID_CHARSET, EVENT_ID_UNIQUE, *enums, *rating,
            TIMESTAMP_PARSEABLE, TIMESTAMP_NOT_AHEAD, TIMESTAMP_WITHIN_HORIZON)


RULE_FAMILIES: tuple[RuleFamily, ...] = (
    RuleFamily("ids_well_formed", f"Every id is present, 1-{MAX_ID_LENGTH} characters long and made of "
               f"{ID_CHARSET_TEXT}.", (REQUIRED, ID_LENGTH, ID_CHARSET)),
    RuleFamily("event_ids_unique", "No event_id is reused for another event in one drained batch: a later "
               "occurrence with other payload fields is a dead letter (a retry with the same fields is "
               "dropped as a duplicate).", (EVENT_ID_UNIQUE,)),
    RuleFamily("values_in_enum", "action / feedback_type are values of the contract's enums.",
               tuple(enum_check(c) for c in ENUM_COLUMNS)),
    RuleFamily("rating_in_range", "Explicit ratings are 1-5, implicit ones 0-1.", (RATING_IN_RANGE,)),
    RuleFamily("timestamps_sane", "timestamp is ISO 8601, at most MAX_EVENT_AHEAD_SECONDS ahead of "
               "received_at and at most MAX_EVENT_AGE_HOURS older than it.",
               (TIMESTAMP_PARSEABLE, TIMESTAMP_NOT_AHEAD, TIMESTAMP_WITHIN_HORIZON)),
)


def family_of(check: str) -> str:
    for family in RULE_FAMILIES:
        if check in family.checks:
            return family.name
    return check
