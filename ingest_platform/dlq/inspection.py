"""Looking at the dead-letter queue: counts by reason, type and hour, and filtered listings.

Everything reads the warehouse's `dead_letter_events` view (the same one analysts query), through a
read-only connection, refreshed first so it lists every file in the lake.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import duckdb

from ingest_platform.contract import DEAD_LETTER_DATASET
from ingest_platform.storage.lake import dataset_files
from ingest_platform.storage.warehouse import connect_read_only, refresh_warehouse

# The hour a letter was drained in, from its hive partition columns.
LETTER_HOUR_SQL = "(date + to_hours(hour))"

REASON_COUNTS_SQL = """
SELECT f.check AS "check", f.column AS "column", count(*) AS letters
FROM (SELECT unnest(failures) AS f FROM dead_letter_events WHERE {where})
GROUP BY ALL ORDER BY letters DESC, "check", "column"
"""

TYPE_COUNTS_SQL = """
SELECT event_type, replay_status, count(*) AS letters
FROM dead_letter_events WHERE {where}
GROUP BY ALL ORDER BY event_type, replay_status
"""

HOUR_COUNTS_SQL = f"""
SELECT strftime({LETTER_HOUR_SQL}, '%Y-%m-%dT%H:00Z') AS hour, event_type, count(*) AS letters
FROM dead_letter_events WHERE {{where}}
GROUP BY ALL ORDER BY hour, event_type
"""

LIST_SQL = f"""
SELECT event_id, event_type, strftime({LETTER_HOUR_SQL}, '%Y-%m-%dT%H:00Z') AS hour, stream_id,
       list_transform(failures, lambda f: f.check) AS checks,
       failures[1].message AS first_message, replay_status
FROM dead_letter_events WHERE {{where}}
ORDER BY {LETTER_HOUR_SQL}, stream_id
LIMIT ?
"""

# What a replay needs of each selected letter.
SELECT_FOR_REPLAY_SQL = f"""
SELECT event_id, event_type, stream_id, received_at, api_key_id, raw_payload
FROM dead_letter_events WHERE {{where}}
ORDER BY {LETTER_HOUR_SQL}, stream_id
LIMIT ?
"""


@dataclass
class LetterFilter:
    """Which dead letters: every field is optional; set ones must all match."""

    event_type: str | None = None
    check: str | None = None  # any failure with this check name
    column: str | None = None  # any failure on this column
    since: datetime | None = None  # drained in this hour or later
    until: datetime | None = None  # drained in this hour or earlier
    statuses: tuple[str, ...] = ()  # replay_status in these (empty: any)
    event_ids: tuple[str, ...] = ()
    replay_id: str | None = None  # letters whose latest replay is this one
    latest_letters_only: bool = False  # skip letters superseded by a newer letter of the same event

    def where(self) -> tuple[str, list]:
        clauses, params = ["TRUE"], []
        if self.event_type:
            clauses.append("event_type = ?")
            params.append(self.event_type)
        if self.check:
            clauses.append("list_contains(list_transform(failures, lambda f: f.check), ?)")
            params.append(self.check)
        if self.column:
            clauses.append("list_contains(list_transform(failures, lambda f: f.column), ?)")
            params.append(self.column)
        if self.since:
            clauses.append(f"{LETTER_HOUR_SQL} >= ?")
            params.append(_hour(self.since))
        if self.until:
            clauses.append(f"{LETTER_HOUR_SQL} <= ?")
            params.append(_hour(self.until))
        if self.statuses:
            clauses.append("list_contains(?, replay_status)")
            params.append(list(self.statuses))
        if self.event_ids:
            clauses.append("list_contains(?, event_id)")
            params.append(list(self.event_ids))
        if self.replay_id:
            clauses.append("replay_id = ?")
            params.append(self.replay_id)
        if self.latest_letters_only:
            clauses.append("is_latest_letter")
        return " AND ".join(clauses), params


@dataclass
class Stats:
    by_reason: list[tuple] = field(default_factory=list)  # (check, column, letters)
    by_type: list[tuple] = field(default_factory=list)  # (event_type, replay_status, letters)
    by_hour: list[tuple] = field(default_factory=list)  # (hour, event_type, letters)

    @property
    def total(self) -> int:
        return sum(row[-1] for row in self.by_type)


def _hour(moment: datetime) -> datetime:
    moment = moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    # Partition columns carry no zone: compare in naive UTC.
    return moment.astimezone(timezone.utc).replace(minute=0, second=0, microsecond=0, tzinfo=None)


def open_dead_letters(warehouse: Path, lake: Path) -> duckdb.DuckDBPyConnection | None:
    """A read-only connection whose views cover every file now in the lake; None while there are
    no dead letters. Views list a snapshot of files, so the warehouse is refreshed first (an
    atomic swap under the lake's refresh lock, which also shows analysts the latest statuses)."""
    if not dataset_files(lake, DEAD_LETTER_DATASET):
        return None
    refresh_warehouse(warehouse, lake)
    return connect_read_only(warehouse)


def dead_letter_stats(warehouse: Path, lake: Path, letters: LetterFilter | None = None) -> Stats:
    con = open_dead_letters(warehouse, lake)
    if con is None:
        return Stats()
    where, params = (letters or LetterFilter()).where()
    with con:
        return Stats(
            by_reason=con.execute(REASON_COUNTS_SQL.format(where=where), params).fetchall(),
            by_type=con.execute(TYPE_COUNTS_SQL.format(where=where), params).fetchall(),
            by_hour=con.execute(HOUR_COUNTS_SQL.format(where=where), params).fetchall(),
        )


def list_dead_letters(warehouse: Path, lake: Path, letters: LetterFilter | None = None,
                      limit: int = 50) -> tuple[list[str], list[tuple]]:
    """(column names, rows) of the letters matching `letters`, oldest first."""
    return _query(warehouse, lake, LIST_SQL, letters, limit)


def letters_for_replay(warehouse: Path, lake: Path, letters: LetterFilter, limit: int | None) -> list[dict]:
    columns, rows = _query(warehouse, lake, SELECT_FOR_REPLAY_SQL, letters, limit)
    return [dict(zip(columns, row)) for row in rows]


def _query(warehouse: Path, lake: Path, sql: str, letters: LetterFilter | None,
           limit: int | None) -> tuple[list[str], list[tuple]]:
    con = open_dead_letters(warehouse, lake)
    if con is None:
        return [], []
    where, params = (letters or LetterFilter()).where()
    with con:
        relation = con.execute(sql.format(where=where), [*params, limit if limit is not None else 2**62])
        columns = [d[0] for d in relation.description]
        return columns, relation.fetchall()
