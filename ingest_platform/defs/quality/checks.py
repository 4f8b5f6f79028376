"""Data-quality asset checks on the landed event datasets and the dead-letter queue.

The drain sensor evaluates them for every drained batch (`quality_evaluations`, whose results it
returns in its SensorResult); `data_quality_checks` declares them, so the UI lists them on each
asset, and re-evaluates them over the latest lake hour when run by hand.
"""

import dagster as dg

from ingest_platform.contract import DEAD_LETTER_DATASET, EVENT_TYPES
from ingest_platform.defs.partitions import hour_partition_key
from ingest_platform.defs.resources import LakeResource
from ingest_platform.dlq.batch_quality import BatchQuality, families_for, latest_hour_quality, measure
from ingest_platform.drain.micro_batch import DrainReport
from ingest_platform.settings import get_settings

DEAD_LETTER_RATE = "dead_letter_rate"
LAKE_FILES_MATCH_CONTRACT = "lake_files_match_contract"
LETTERS_HAVE_REASONS = "letters_have_reasons"
_TYPE_OF_STREAM = {t.stream: t for t in EVENT_TYPES.values()}


def _event_check_specs() -> list[dg.AssetCheckSpec]:
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
            "DEAD_LETTER_RATE_WARN (1%), fails above DEAD_LETTER_RATE_FAIL (10%)."))
        specs.append(dg.AssetCheckSpec(
            LAKE_FILES_MATCH_CONTRACT, asset=event_type.dataset,
            description="Every Parquet file written has exactly the contract's columns and types."))
    specs.append(dg.AssetCheckSpec(
        LETTERS_HAVE_REASONS, asset=DEAD_LETTER_DATASET,
        description="Every dead letter carries at least one failure and its raw payload."))
    return specs


QUALITY_CHECK_SPECS = _event_check_specs()


def quality_evaluations(reports: list[DrainReport]) -> list:
    """Check results (and DLQ observations) for the micro-batches in `reports`."""
    events = []
    for report in reports:
        event_type = _TYPE_OF_STREAM.get(report.range.stream)
        if event_type is None or not report.files:
            continue
        valid = [f.path for f in report.files if f.dataset == event_type.dataset]
        dead = [f.path for f in report.files if f.dataset == DEAD_LETTER_DATASET]
        quality = measure(event_type.name, valid, dead, scope=f"{report.range.stream} "
                          f"({report.range.start}, {report.range.end}]")
        partition = hour_partition_key(int(report.files[0].first_id.split("-")[0]))
        events += evaluations(quality)
        if quality.dead_letters:
            events.append(dead_letter_observation(quality, partition))
    return events


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
                      description="Re-evaluates the data-quality checks over the latest lake hour.")
def data_quality_checks(context: dg.AssetCheckExecutionContext, lake: LakeResource):
    pending = set(context.selected_asset_check_keys)
    for quality in latest_hour_quality(lake.lake_dir):
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
