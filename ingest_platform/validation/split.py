"""Split a batch into valid rows and rejected rows, each rejected row with every reason it failed.

Every input row ends up in exactly one of the two frames: `valid.height + rejected.height ==
frame.height`, always (a structural problem with the frame itself raises instead of guessing).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandera.errors
import polars as pl

from ingest_platform.contract import MAX_ID_LENGTH
from ingest_platform.validation import rules as r
from ingest_platform.validation.schemas import event_schema

ROW_INDEX = "__row"
FAILURE_STRUCT = pl.Struct({"check": pl.String, "column": pl.String, "value": pl.String, "message": pl.String})
FAILURES = pl.List(FAILURE_STRUCT)
MAX_VALUE_CHARS = 256  # a failure quotes at most this much of a value; raw_payload keeps all of it
_PANDERA_NOT_NULL = "not_nullable"
_REUSED_ROW = "__reused_row"


@dataclass
class SplitBatch:
    valid: pl.DataFrame
    rejected: pl.DataFrame  # the failing rows, plus a `failures` list[struct] column

    @property
    def failures(self) -> pl.DataFrame:
        """One row per failure: check, column, value, message (for counting by reason)."""
        return self.rejected.select(pl.col("failures").explode().struct.unnest())


def split_valid_rows(event_type: str, frame: pl.DataFrame, rules: r.QualityRules | None = None) -> SplitBatch:
    """Validate lazily (every failed check of every row) and split the frame by row.

    `rules` defaults to the settings (MAX_EVENT_AHEAD_SECONDS, MAX_EVENT_AGE_HOURS)."""
    rules = rules or r.QualityRules.from_settings()
    try:
        event_schema(event_type, rules).validate(frame, lazy=True)
    except pandera.errors.SchemaErrors as exc:
        failures = failures_by_row(event_type, frame, exc.failure_cases, rules)
    else:
        return SplitBatch(valid=frame, rejected=frame.clear().with_columns(pl.lit(None, dtype=FAILURES).alias("failures")))
    return _split_by_row(frame, failures.sort(ROW_INDEX))


def reject_reused_ids(event_type: str, frame: pl.DataFrame, rules: r.QualityRules | None = None) -> pl.DataFrame:
    """`frame`'s rows, all rejected: each fails `event_id_unique_in_batch` plus whatever else it
    fails on its own (in `failures`, row order kept).

    The drain calls this for the rare rows whose event_id an earlier valid row of the same batch
    already holds, with a different payload (an id reused for another event; retries of the same
    content, however formatted, never get here). Validated apart from that earlier row, pandera's own uniqueness check
    would only compare the reused rows among themselves, so its verdict is replaced by one failure
    per row: the same whatever else is in `frame`, so a retried drain writes identical letters."""
    rules = rules or r.QualityRules.from_settings()
    # rechunk: the rows come filtered out of a drain frame, and polars 2.1 can panic formatting
    # strings of such views (see dedup._retries_and_reuses); they are few.
    indexed = frame.rechunk().with_row_index(_REUSED_ROW)
    split = split_valid_rows(event_type, indexed, rules)
    no_failures = pl.lit(pl.Series([[]], dtype=FAILURES)).first().alias("failures")
    judged = pl.concat([split.rejected, split.valid.with_columns(no_failures)]).sort(_REUSED_ROW)
    kind = pl.col("feedback_type") if "feedback_type" in frame.columns else pl.lit(None, dtype=pl.String)
    unique = judged.select(
        pl.lit(r.EVENT_ID_UNIQUE).alias("check"), pl.lit("event_id").alias("column"),
        pl.col("event_id").str.slice(0, MAX_VALUE_CHARS).alias("value"), "received_at", kind.alias("feedback_type"),
    ).select(pl.concat_list(pl.struct("check", "column", "value", _message(rules).alias("message"))))
    own = judged["failures"].list.filter(pl.element().struct.field("check") != r.EVENT_ID_UNIQUE)
    return judged.drop(_REUSED_ROW).with_columns(own.list.concat(unique.to_series()).alias("failures"))


def _split_by_row(frame: pl.DataFrame, failures: pl.DataFrame) -> SplitBatch:
    """Two filters with one row mask, both keeping stream order. Measured on 1M rows with 10k
    failing: 14 ms, where an anti join plus an inner join on a row index took 90 ms."""
    failing = pl.int_range(frame.height, dtype=pl.UInt32, eager=True).is_in(failures[ROW_INDEX].implode())
    rejected = frame.filter(failing).with_columns(failures["failures"])  # both in row order
    return SplitBatch(valid=frame.filter(~failing), rejected=rejected)


def failures_by_row(event_type: str, frame: pl.DataFrame, cases: pl.DataFrame, rules: r.QualityRules) -> pl.DataFrame:
    """One row per failing input row: its index and the list of (check, column, value, message)."""
    if cases["index"].null_count():
        # A failure with no row (a missing or mistyped column) is a bug in how the frame was built,
        # not bad data: fail loudly rather than guess which rows it concerns.
        structural = cases.filter(pl.col("index").is_null())
        raise ValueError(f"batch does not match its schema: {structural.to_dicts()}")
    cases = cases.select(
        pl.col("index").cast(pl.UInt32).alias(ROW_INDEX),
        pl.col("column").cast(pl.String),
        _check_name().alias("check"),
        pl.col("failure_case").cast(pl.String).alias("value"),
    )
    context = _row_context(event_type, frame, cases[ROW_INDEX].unique())
    detailed = cases.join(context, on=ROW_INDEX, how="left").with_columns(
        pl.when(pl.col("column") == "timestamp").then(pl.coalesce("raw_timestamp", "value"))
        .otherwise("value").str.slice(0, MAX_VALUE_CHARS).alias("value"),
    )
    return (
        detailed.select(
            ROW_INDEX,
            pl.struct("check", "column", "value", _message(rules).alias("message")).alias("failure"),
        )
        .group_by(ROW_INDEX, maintain_order=True)
        .agg(pl.col("failure").alias("failures"))
    )


def _check_name() -> pl.Expr:
    """pandera's names, in ours: a null timestamp is one the drain could not parse."""
    check, column = pl.col("check").cast(pl.String), pl.col("column").cast(pl.String)
    not_null = check == _PANDERA_NOT_NULL
    return (
        pl.when(not_null & (column == "timestamp")).then(pl.lit(r.TIMESTAMP_PARSEABLE))
        .when(not_null).then(pl.lit(r.REQUIRED))
        .otherwise(check)
    )


def _row_context(event_type: str, frame: pl.DataFrame, rows: pl.Series) -> pl.DataFrame:
    """What messages need from the failing rows only: received_at, feedback_type, and the
    timestamp text exactly as the client sent it (the parsed column is null when it did not parse)."""
    columns = [pl.col("received_at")]
    if "feedback_type" in frame.columns:
        columns.append(pl.col("feedback_type"))
    else:
        columns.append(pl.lit(None, dtype=pl.String).alias("feedback_type"))
    if "raw_payload" in frame.columns:
        columns.append(pl.col("raw_payload").str.json_path_match(f"$.{event_type}.timestamp").alias("raw_timestamp"))
    else:
        columns.append(pl.lit(None, dtype=pl.String).alias("raw_timestamp"))
    # A gather of the failing rows, not a filter over the whole batch: 1 ms instead of 12 on 1M rows.
    return frame[rows].select(pl.lit(rows).alias(ROW_INDEX), *columns)


def _quoted(expr: pl.Expr, limit: int = 64) -> pl.Expr:
    text = expr.fill_null("null")
    return pl.when(text.str.len_chars() > limit).then(pl.format("'{}…'", text.str.slice(0, limit))).otherwise(
        pl.format("'{}'", text))


def _message(rules: r.QualityRules) -> pl.Expr:
    check, column, value = pl.col("check"), pl.col("column"), pl.col("value")
    received = pl.col("received_at").dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    message = pl.when(check == r.REQUIRED).then(pl.format("{} is missing", column))
    message = message.when((check == r.ID_LENGTH) & (value.str.len_chars() == 0)).then(
        pl.format("{} is empty", column))
    message = message.when(check == r.ID_LENGTH).then(pl.format(
        "{} is {} characters long; at most {} are allowed", column, value.str.len_chars(), pl.lit(MAX_ID_LENGTH)))
    message = message.when(check == r.ID_CHARSET).then(pl.format(
        "{} {} contains characters other than {}", column, _quoted(value), pl.lit(r.ID_CHARSET_TEXT)))
    message = message.when(check == r.EVENT_ID_UNIQUE).then(pl.format(
        "event_id {} is already taken by an earlier valid event of this batch with a different payload; "
        "that one was kept", _quoted(value)))
    for enum_column, allowed in r.ENUM_COLUMNS.items():
        message = message.when(check == r.enum_check(enum_column)).then(pl.format(
            "{} {} is not one of {}", column, _quoted(value), pl.lit(", ".join(allowed))))
    ranges = "; ".join(f"{k} ratings are {low:g}-{high:g}" for k, (low, high) in r.RATING_RANGES.items())
    message = message.when(check == r.RATING_IN_RANGE).then(pl.format(
        "rating {} is out of range for {} feedback ({})", value, pl.col("feedback_type"), pl.lit(ranges)))
    message = message.when(check == r.TIMESTAMP_PARSEABLE).then(pl.format(
        "{} {} is not an ISO 8601 instant (e.g. 2026-11-26T10:00:00Z)", column, _quoted(value)))
    message = message.when(check == r.TIMESTAMP_NOT_AHEAD).then(pl.format(
        "{} {} is more than {} ahead of received_at {} (client clock skew)",
        column, _quoted(value), pl.lit(_human(rules.max_ahead.total_seconds())), received))
    message = message.when(check == r.TIMESTAMP_WITHIN_HORIZON).then(pl.format(
        "{} {} is more than {} older than received_at {}",
        column, _quoted(value), pl.lit(_human(rules.max_age.total_seconds())), received))
    return message.otherwise(pl.format("{} failed {}", column, check))


def _human(seconds: float) -> str:
    for unit, size in (("days", 86_400), ("hours", 3_600), ("minutes", 60)):
        if seconds >= 2 * size and seconds % size == 0:
            return f"{int(seconds // size)} {unit}"
    return f"{seconds:g} seconds"
