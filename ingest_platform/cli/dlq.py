"""`ingest-platform dlq`: inspect and replay the dead-letter queue."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Optional

import typer

from ingest_platform.settings import get_settings

dlq_app = typer.Typer(no_args_is_help=True, help="Inspect and replay dead letters (events that failed validation).")

EventTypeOption = Annotated[Optional[str], typer.Option("--type", help="user_interaction or feedback_event.")]
CheckOption = Annotated[Optional[str], typer.Option("--check", help="Only letters with a failure of this check "
                                                   "(e.g. action_in_enum; see `dlq stats`).")]
ColumnOption = Annotated[Optional[str], typer.Option("--column", help="Only letters with a failure on this column.")]
SinceOption = Annotated[Optional[datetime], typer.Option(help="Drained in this UTC hour or later, e.g. 2026-11-26T10.",
                                                         formats=["%Y-%m-%dT%H", "%Y-%m-%dT%H:%M", "%Y-%m-%d"])]
UntilOption = Annotated[Optional[datetime], typer.Option(help="Drained in this UTC hour or earlier.",
                                                         formats=["%Y-%m-%dT%H", "%Y-%m-%dT%H:%M", "%Y-%m-%d"])]


def _filter(event_type, check, column, since, until, statuses=(), event_ids=()):
    from ingest_platform.dlq.inspection import LetterFilter
    from ingest_platform.dlq.lineage import REPLAY_STATUSES

    for status in statuses:
        if status not in REPLAY_STATUSES:
            typer.echo(f"error: unknown status {status!r}; one of {', '.join(REPLAY_STATUSES)}", err=True)
            raise typer.Exit(2)
    return LetterFilter(event_type=event_type, check=check, column=column, since=since, until=until,
                        statuses=tuple(statuses), event_ids=tuple(event_ids))


def _table(title: str, columns: list[str], rows: list[tuple]) -> None:
    import sys

    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if v is None else ", ".join(v) if isinstance(v, list) else str(v) for v in row))
    Console(width=None if sys.stdout.isatty() else 200).print(table)


@dlq_app.command("stats")
def stats(event_type: EventTypeOption = None, check: CheckOption = None, column: ColumnOption = None,
          since: SinceOption = None, until: UntilOption = None) -> None:
    """Dead letters counted by reason (check, column), by type and replay status, and by hour."""
    from ingest_platform.dlq.inspection import dead_letter_stats

    settings = get_settings()
    result = dead_letter_stats(settings.warehouse_path, settings.lake_dir,
                               _filter(event_type, check, column, since, until))
    typer.echo(f"{result.total} dead letters")
    if result.total:
        _table("by reason (a letter counts once per failure)", ["check", "column", "letters"], result.by_reason)
        _table("by type", ["event_type", "replay_status", "letters"], result.by_type)
        _table("by hour drained", ["hour", "event_type", "letters"], result.by_hour)


@dlq_app.command("list")
def list_letters(
    event_type: EventTypeOption = None, check: CheckOption = None, column: ColumnOption = None,
    since: SinceOption = None, until: UntilOption = None,
    status: Annotated[Optional[list[str]], typer.Option("--status", help="Replay status (repeatable): pending, "
                                                        "replayed, succeeded, failed_again, already_valid.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many letters.")] = 50,
) -> None:
    """List dead letters (oldest first) with their failed checks and replay status."""
    from ingest_platform.dlq.inspection import list_dead_letters

    settings = get_settings()
    columns, rows = list_dead_letters(settings.warehouse_path, settings.lake_dir,
                                      _filter(event_type, check, column, since, until, status or ()), limit)
    if not rows:
        typer.echo("no dead letters match")
        return
    _table(f"{len(rows)} dead letters", columns, rows)


@dlq_app.command("replay")
def replay(
    event_type: EventTypeOption = None, check: CheckOption = None, column: ColumnOption = None,
    since: SinceOption = None, until: UntilOption = None,
    status: Annotated[Optional[list[str]], typer.Option("--status", help="Replay letters in these statuses "
                                                        "(repeatable; default: the newest letter of each event, "
                                                        "pending or failed_again).")] = None,
    event_id: Annotated[Optional[list[str]], typer.Option("--event-id", help="Only these event ids (repeatable).")] = None,
    fix: Annotated[Optional[str], typer.Option(help="A named fix to apply first (see `dlq fixes`).")] = None,
    limit: Annotated[Optional[int], typer.Option(min=1, help="At most this many letters.")] = None,
    wait: Annotated[float, typer.Option(help="Seconds to wait for the drain to process the replayed entries "
                                        "before reporting outcomes (0: do not wait; see `dlq report`).")] = 60.0,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only say how many would pass validation now "
                                          "(after the fix) and why the others would fail; change nothing.")] = False,
) -> None:
    """Re-inject dead letters into their stream with their original event_id, then report outcomes.

    With ENABLE_DLQ_HANDLING=false only letters that pass validation are re-injected (one that
    failed again would stop its stream's drain); the others are reported as held back."""
    from rich.progress import Progress

    from ingest_platform.dlq.replay import replay_dead_letters
    from ingest_platform.storage import event_log

    settings = get_settings()
    letters = _filter(event_type, check, column, since, until, status or (), event_id or ())
    client = event_log.connect(settings.effective_redis_url)
    with Progress(transient=True) as progress:
        task = progress.add_task("replaying", total=None)
        try:
            result = replay_dead_letters(
                client, settings.lake_dir, settings.warehouse_path, letters, fix=fix, limit=limit,
                dry_run=dry_run, only_valid=not settings.enable_dlq_handling,
                on_selected=lambda n: progress.update(task, total=n),
                on_progress=lambda n: progress.advance(task, n))
        except ValueError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2)
    predicted = ", ".join(f"{check} {n}" for check, n in result.predicted_failures.most_common())
    typer.echo(f"{result.selected} selected: {result.predicted_valid} pass validation now"
               + (f"; failures predicted: {predicted}" if predicted else ""))
    if dry_run:
        typer.echo("dry run: nothing re-injected")
        return
    typer.echo(f"{result.replay_id}: {result.injected} re-injected, "
               f"{result.already_valid} already valid (not re-injected), "
               f"{len(result.not_replayable)} not replayable"
               + (f", {result.held_back} held back (would fail again; ENABLE_DLQ_HANDLING is off)"
                  if result.held_back else ""))
    for event_id_, why in result.not_replayable[:20]:
        typer.echo(f"  not replayable: {event_id_}: {why}", err=True)
    if not result.injected:
        _report(result.replay_id)
        return
    if wait > 0:
        from ingest_platform.dlq.replay import wait_for_drain
        from ingest_platform.storage.event_log import DrainLog

        if not wait_for_drain(DrainLog(client), result.last_entry_ids, wait):
            typer.echo(f"the drain has not processed the replayed entries within {wait:g} s; "
                       f"see `ingest-platform dlq report {result.replay_id}` later")
    _report(result.replay_id)


@dlq_app.command("report")
def report(replay_id: Annotated[str, typer.Argument(help="The id `dlq replay` printed.")]) -> None:
    """Where the letters of one replay stand now: succeeded, failed again, already valid, awaiting the drain."""
    _report(replay_id)


def _report(replay_id: str) -> None:
    from ingest_platform.dlq.replay import replay_outcomes
    from ingest_platform.storage import event_log

    settings = get_settings()
    log = event_log.DrainLog(event_log.connect(settings.effective_redis_url))
    outcome = replay_outcomes(settings.warehouse_path, settings.lake_dir, replay_id, log)
    typer.echo(f"{replay_id}: {outcome.succeeded} succeeded, {outcome.failed_again} failed again, "
               f"{outcome.already_valid} already valid, {outcome.awaiting_drain} awaiting the drain")


@dlq_app.command("fixes")
def fixes() -> None:
    """List the named fixes `dlq replay --fix` can apply."""
    from ingest_platform.dlq.fixes import FIXES

    for named in FIXES.values():
        typer.echo(f"{named.name}\t{named.description}")
