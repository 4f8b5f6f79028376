"""The dead-letter replay as a Dagster job (the same as `ingest-platform dlq replay`)."""

from datetime import datetime
from typing import Optional

import dagster as dg

from ingest_platform.defs.resources import EventLogResource, LakeResource
from ingest_platform.dlq.inspection import LetterFilter
from ingest_platform.dlq.replay import replay_dead_letters, replay_outcomes, wait_for_drain
from ingest_platform.settings import get_settings


class ReplayConfig(dg.Config):
    """Which dead letters to replay, and how."""

    event_type: Optional[str] = None
    check: Optional[str] = None
    column: Optional[str] = None
    since: Optional[str] = None  # ISO hour, e.g. "2026-11-26T10"
    until: Optional[str] = None
    statuses: list[str] = []  # empty: the newest letter of each event, pending or failed_again
    event_ids: list[str] = []
    fix: Optional[str] = None
    limit: Optional[int] = None
    wait_seconds: float = 60.0  # for the drain to process the replayed entries before reporting
    dry_run: bool = False  # only predict (validate after the fix); re-inject nothing


@dg.op(description="Re-inject the selected dead letters with their original event_id and report outcomes.")
def replay_dead_letters_op(context: dg.OpExecutionContext, config: ReplayConfig,
                           event_log: EventLogResource, lake: LakeResource) -> dg.Output:
    letters = LetterFilter(
        event_type=config.event_type, check=config.check, column=config.column,
        since=datetime.fromisoformat(config.since) if config.since else None,
        until=datetime.fromisoformat(config.until) if config.until else None,
        statuses=tuple(config.statuses), event_ids=tuple(config.event_ids))
    log = event_log.drain_log()
    result = replay_dead_letters(log.client, lake.lake_dir, lake.warehouse_path, letters,
                                 fix=config.fix, limit=config.limit, dry_run=config.dry_run,
                                 only_valid=not get_settings().enable_dlq_handling,
                                 on_progress=lambda n: context.log.info(f"re-injected a chunk of {n} letters"))
    drained = True
    if result.injected and config.wait_seconds > 0 and not config.dry_run:
        drained = wait_for_drain(log, result.last_entry_ids, config.wait_seconds)
    outcome = replay_outcomes(lake.warehouse_path, lake.lake_dir, result.replay_id, log)
    context.log.info(f"{result.replay_id}: {outcome.counts}")
    return dg.Output(None, metadata={
        "replay_id": result.replay_id,
        "selected": result.selected,
        "re_injected": result.injected,
        "not_replayable": len(result.not_replayable),
        "predicted_valid": result.predicted_valid,
        "predicted_failures": dg.MetadataValue.json(dict(result.predicted_failures)),
        "held_back": result.held_back,
        "dry_run": config.dry_run,
        "succeeded": outcome.succeeded,
        "failed_again": outcome.failed_again,
        "already_valid": outcome.already_valid,
        "awaiting_drain": outcome.awaiting_drain,
        "drain_caught_up": drained,
    })


@dg.job(description="Replay dead letters (filter, optional named fix) back into their streams.")
def replay_dead_letters_job():
    replay_dead_letters_op()
