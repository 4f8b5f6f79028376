"""`ingest-platform replay`: re-drain a retained stream range into the lake, idempotently."""

from __future__ import annotations

from typing import Annotated

import typer

from ingest_platform.settings import get_settings


def replay(
    stream: Annotated[str, typer.Option(help="Event type (user_interaction) or stream key "
                                              "(ingest:events:user_interaction).")],
    from_: Annotated[str, typer.Option("--from", help="First entry: a stream id (1764151200000-0), "
                                                       "epoch milliseconds, or an ISO 8601 time.")],
    to: Annotated[str, typer.Option(help="Last entry (inclusive), same forms as --from; clamped to "
                                         "the committed drain cursor.")],
) -> None:
    """Re-drain entries still retained in Redis; only rows missing from the lake are written."""
    from ingest_platform.contract import EVENT_TYPES
    from ingest_platform.drain.maintenance import MaintenanceBusy
    from ingest_platform.drain.replay import parse_bound, replay_range
    from ingest_platform.storage import event_log
    from ingest_platform.storage.warehouse import refresh_warehouse

    event_type = EVENT_TYPES.get(stream) or next((t for t in EVENT_TYPES.values() if t.stream == stream), None)
    if event_type is None:
        known = ", ".join(EVENT_TYPES)
        typer.echo(f"error: unknown stream {stream!r} (one of: {known}, or their ingest:events:* keys)", err=True)
        raise typer.Exit(2)
    try:
        start, end = parse_bound(from_, upper=False), parse_bound(to, upper=True)
    except ValueError as exc:
        typer.echo(f"error: --from/--to must be stream ids, epoch ms or ISO 8601 times: {exc}", err=True)
        raise typer.Exit(2)
    settings = get_settings()
    log = event_log.DrainLog(event_log.connect(settings.effective_redis_url))
    oldest = log.client.xrange(event_type.stream, count=1)
    try:
        report = replay_range(log, event_type, settings.lake_dir, start, end, settings.enable_dlq_handling)
    except MaintenanceBusy as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1)
    if report.files:
        refresh_warehouse(settings.warehouse_path, settings.lake_dir)
    if oldest and event_log.entry_order(start) < event_log.entry_order(oldest[0][0].decode()):
        typer.echo(f"note: entries before {oldest[0][0].decode()} were already trimmed "
                   f"(DRAIN_RETENTION_HOURS={settings.drain_retention_hours:g})", err=True)
    typer.echo(f"replayed {event_type.stream} [{report.start}, {report.end}]: {report.entries} entries, "
               f"{report.landed_valid} valid rows and {report.landed_dead} dead letters written, "
               f"{report.already_landed} already in the lake, {report.duplicates} duplicates dropped")
