"""Data-quality asset checks on the landed event datasets and the dead-letter queue.

The drain sensor evaluates them for every drained batch (`quality_evaluations`, whose results it
returns in its SensorResult), and `landed_events` for every hour it replays (`batch_quality`).
`data_quality_checks` declares them, so the UI lists them on each asset, and re-evaluates them over
one lake hour: the run's partition (a backfill), else the latest hour (run by hand).
"""

from collections import Counter
from datetime import datetime

import dagster as dg

from ingest_platform.contract import DEAD_LETTER_DATASET, EVENT_TYPES
from ingest_platform.defs.partitions import hour_partition_key, hourly_partitions
from ingest_platform.defs.resources import LakeResource
from ingest_platform.dlq.batch_quality import (
    BatchQuality,
    families_for,
    hour_quality,
    latest_hour_quality,
    measure,
)
from ingest_platform.drain.micro_batch import DrainReport, LandedFile
from ingest_platform.settings import get_settings

DEAD_LETTER_RATE = "dead_letter_rate"
LAKE_FILES_MATCH_CONTRACT = "lake_files_match_contract"
LETTERS_HAVE_REASONS = "letters_have_reasons"
_TYPE_OF_STREAM = {t.stream: t for t in EVENT_TYPES.values()}


def quality_check_specs() -> list[dg.AssetCheckSpec]:
    """The declared checks; descriptions quote the configured thresholds, so the UI says what runs."""
    settings = get_settings()
    warn, fail = _percent(settings.dead_letter_rate_warn), _percent(settings.dead_letter_rate_fail)
    specs = []
    for event_type in EVENT_TYPES.values():
        for family in families_for(event_type.name):
            specs.append(dg.AssetCheckSpec(
                family.name, asset=event_type.dataset,
                description=f"{family.description} Warns when rows of a batch fail it (they went to "
                "dead_letter_events instead of this asset)."))
        specs.append(dg.AssetCheckSpec(
            DEAD_LETTER_RATE, asset=event_type.dataset,
            description="Share of a batch's events that became dead letters: warns above "
            f"DEAD_LETTER_RATE_WARN ({warn}), fails above DEAD_LETTER_RATE_FAIL ({fail})."))
        specs.append(dg.AssetCheckSpec(
            LAKE_FILES_MATCH_CONTRACT, asset=event_type.dataset,
            description="Every Parquet file written has exactly the contract's columns and types."))
    specs.append(dg.AssetCheckSpec(
        LETTERS_HAVE_REASONS, asset=DEAD_LETTER_DATASET,
        description="Every dead letter carries at least one failure and its raw payload."))
    return specs


def _percent(share: float) -> str:
    return f"{share * 100:g}%"


QUALITY_CHECK_SPECS = quality_check_specs()


def quality_evaluations(reports: list[DrainReport]) -> list:
    """Check results (and DLQ observations) for the micro-batches in `reports`."""
    events = []
    for report in reports:
        quality = batch_quality(report.range.stream, report.files,
                                scope=f"{report.range.stream} ({report.range.start}, {report.range.end}]")
        if quality is None:
            continue
        partition = hour_partition_key(int(report.files[0].first_id.split("-")[0]))
        events += evaluations(quality)
        if quality.dead_letters:
            events.append(dead_letter_observation(quality, partition))
    return events


def batch_quality(stream: str, files: list[LandedFile], scope: str) -> BatchQuality | None:
    """The quality of what one drain (or replay) of `stream` landed; None when it landed nothing."""
    event_type = _TYPE_OF_STREAM.get(stream)
    if event_type is None or not files:
        return None
    valid = [f.path for f in files if f.dataset == event_type.dataset]
    dead = [f.path for f in files if f.dataset == DEAD_LETTER_DATASET]
    return measure(event_type.name, valid, dead, scope=scope)


def dead_letter_counts(qualities: list[BatchQuality]) -> dict[str, dg.MetadataValue]:
    """DLQ metadata over several batches: letters counted by reason (check), column and event type."""
    by_check, by_column, by_type = Counter(), Counter(), Counter()
    for quality in qualities:
        by_check.update(quality.by_check)
        by_column.update(quality.by_column)
        by_type[quality.event_type] += quality.dead_letters
    return {"by_check": dg.MetadataValue.json(dict(by_check.most_common())),
            "by_column": dg.MetadataValue.json(dict(by_column.most_common())),
            "by_event_type": dg.MetadataValue.json(dict(+by_type))}


def evaluations(quality: BatchQuality) -> list[dg.AssetCheckEvaluation]:
    dataset = EVENT_TYPES[quality.event_type].dataset
    results = [_family_result(dataset, quality, family) for family in families_for(quality.event_type)]
    results.append(_rate_result(dataset, quality))
    results.append(dg.AssetCheckEvaluation(
        asset_key=dg.AssetKey(dataset), check_name=LAKE_FILES_MATCH_CONTRACT,
        passed=not quality.contract_mismatches, severity=dg.AssetCheckSeverity.ERROR,
        metadata={"batch": quality.scope, "mismatches": "\n".join(quality.contract_mismatches) or "none"}))
    if quality.dead_letters:
        results.append(dg.AssetCheckEvaluation(
            asset_key=dg.AssetKey(DEAD_LETTER_DATASET), check_name=LETTERS_HAVE_REASONS,
            passed=quality.letters_without_reasons == 0, severity=dg.AssetCheckSeverity.ERROR,
            metadata={"batch": quality.scope, "dead_letters": quality.dead_letters,
                      "letters_without_reasons": quality.letters_without_reasons}))
    return results


def _family_result(dataset: str, quality: BatchQuality, family) -> dg.AssetCheckEvaluation:
    failing = quality.by_family.get(family.name, 0)  # a letter counts once per family
    checks = {c: n for c, n in quality.by_check.items() if c in family.checks}
    return dg.AssetCheckEvaluation(
        asset_key=dg.AssetKey(dataset), check_name=family.name, passed=failing == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "batch": quality.scope,
            "rows_in_batch": quality.rows,
            "rows_failing": failing,
            "by_check": dg.MetadataValue.json(checks),
            "example": next((quality.samples[c] for c in checks), "none"),
        },
    )


def _rate_result(dataset: str, quality: BatchQuality) -> dg.AssetCheckEvaluation:
    settings = get_settings()
    rate = quality.dead_letter_rate
    failed_hard = rate > settings.dead_letter_rate_fail
    return dg.AssetCheckEvaluation(
        asset_key=dg.AssetKey(dataset), check_name=DEAD_LETTER_RATE,
        passed=rate <= settings.dead_letter_rate_warn,
        severity=dg.AssetCheckSeverity.ERROR if failed_hard else dg.AssetCheckSeverity.WARN,
        metadata={
            "batch": quality.scope,
            "dead_letter_rate": dg.MetadataValue.float(round(rate, 6)),
            "dead_letters": quality.dead_letters,
            "valid_rows": quality.valid_rows,
            "warn_above": settings.dead_letter_rate_warn,
            "fail_above": settings.dead_letter_rate_fail,
            "by_check": dg.MetadataValue.json(dict(quality.by_check)),
        },
    )


def dead_letter_observation(quality: BatchQuality, partition: str) -> dg.AssetObservation:
    """DLQ metadata for the batch: letters counted by reason (check) and by column."""
    return dg.AssetObservation(
        asset_key=DEAD_LETTER_DATASET, partition=partition,
        metadata={
            "event_type": quality.event_type,
            "batch": quality.scope,
            "dead_letters": quality.dead_letters,
            "by_check": dg.MetadataValue.json(dict(quality.by_check.most_common())),
            "by_column": dg.MetadataValue.json(dict(quality.by_column.most_common())),
            "examples": dg.MetadataValue.md("\n".join(f"- `{c}`: {m}" for c, m in quality.samples.items())),
        },
    )


@dg.multi_asset_check(specs=QUALITY_CHECK_SPECS, can_subset=True, name="data_quality_checks",
                      description="Re-evaluates the data-quality checks over one lake hour: the run's "
                      "partition (a backfill of an hour), else the latest hour.")
def data_quality_checks(context: dg.AssetCheckExecutionContext, lake: LakeResource):
    pending = set(context.selected_asset_check_keys)
    for quality in _qualities_to_check(context, lake):
        for evaluation in evaluations(quality):
            key = dg.AssetCheckKey(evaluation.asset_key, evaluation.check_name)
            if key in pending:
                pending.discard(key)
                yield dg.AssetCheckResult(
                    asset_key=evaluation.asset_key, check_name=evaluation.check_name,
                    passed=evaluation.passed, severity=evaluation.severity, metadata=evaluation.metadata)
    for key in sorted(pending, key=str):  # nothing in the lake to check yet
        yield dg.AssetCheckResult(asset_key=key.asset_key, check_name=key.name, passed=True,
                                  metadata={"batch": "no data in the lake yet"})


def _qualities_to_check(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> list[BatchQuality]:
    if context.has_partition_key:  # in a partitioned run, e.g. beside landed_events in a backfill
        hour: datetime = hourly_partitions.time_window_for_partition_key(context.partition_key).start
        return hour_quality(lake.lake_dir, hour)
    return latest_hour_quality(lake.lake_dir)
