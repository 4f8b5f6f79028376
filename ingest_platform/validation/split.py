"""Split a batch into valid rows and rejected rows, each rejected row with every reason it failed."""

from __future__ import annotations

from dataclasses import dataclass

import pandera.errors
import polars as pl

from ingest_platform.validation.schemas import SCHEMAS

ROW_INDEX = "__row"


@dataclass
class SplitBatch:
    valid: pl.DataFrame
    rejected: pl.DataFrame  # the failing rows, plus a `failures` list[struct] column


FAILURE_STRUCT = pl.Struct({"check": pl.String, "column": pl.String, "value": pl.String, "message": pl.String})


def split_valid_rows(event_type: str, frame: pl.DataFrame) -> SplitBatch:
    """Validate lazily (every failed check of every row) and split the frame by row."""
    schema = SCHEMAS[event_type]
    try:
        schema.validate(frame, lazy=True)
    except pandera.errors.SchemaErrors as exc:
        failures = _failures_by_row(exc.failure_cases)
    else:
        return SplitBatch(valid=frame, rejected=frame.clear().with_columns(
            pl.lit(None, dtype=pl.List(FAILURE_STRUCT)).alias("failures")))
    indexed = frame.with_row_index(ROW_INDEX)
    bad_rows = failures[ROW_INDEX]
    valid = indexed.filter(~pl.col(ROW_INDEX).is_in(bad_rows.implode())).drop(ROW_INDEX)
    rejected = indexed.join(failures, on=ROW_INDEX, how="inner").sort(ROW_INDEX).drop(ROW_INDEX)
    return SplitBatch(valid=valid, rejected=rejected)


def _failures_by_row(cases: pl.DataFrame) -> pl.DataFrame:
    """One row per failing input row: its index and the list of (check, column, value, message)."""
    if cases["index"].null_count():
        # A failure with no row (a missing or mistyped column) is a bug in how the frame was built,
        # not bad data: fail loudly rather than guess which rows it concerns.
        structural = cases.filter(pl.col("index").is_null())
        raise ValueError(f"batch does not match its schema: {structural.to_dicts()}")
    return (
        cases.select(
            pl.col("index").cast(pl.UInt32).alias(ROW_INDEX),
            pl.struct(
                pl.col("check").cast(pl.String).alias("check"),
                pl.col("column").cast(pl.String).fill_null("").alias("column"),
                pl.col("failure_case").cast(pl.String).alias("value"),
                _message().alias("message"),
            ).alias("failure"),
        )
        .group_by(ROW_INDEX, maintain_order=True)
        .agg(pl.col("failure").alias("failures"))
    )


def _message() -> pl.Expr:
    return pl.format("{} failed {}", pl.col("column").cast(pl.String).fill_null("row"), pl.col("check").cast(pl.String))
