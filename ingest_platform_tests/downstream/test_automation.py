"""The downstream automation: a burst of micro-batches gives at most one run per refresh tick, and a
closed hour is rebuilt once after its last change (late data included), never again without one."""

from __future__ import annotations

from datetime import datetime, timedelta

import dagster as dg

from ingest_platform.defs.definitions import defs

ENRICHED = dg.AssetKey("enriched_user_interactions")


def at(hhmmss: str) -> datetime:
    return datetime.fromisoformat(f"2026-11-26T{hhmmss}+00:00")


class Automation:
    def __init__(self, instance):
        self.instance, self.cursor = instance, None

    def land(self, hour: str) -> None:
        self.instance.report_runless_asset_event(dg.AssetMaterialization(asset_key="user_interactions",
                                                                         partition=f"2026-11-26-{hour}"))

    def tick(self, now: datetime) -> set[str]:
        result = dg.evaluate_automation_conditions(defs=defs, instance=self.instance, evaluation_time=now,
                                                   cursor=self.cursor)
        self.cursor = result.cursor
        return set(result.get_requested_partitions(ENRICHED)) if result.get_num_requested(ENRICHED) else set()


def test_micro_batches_do_not_start_a_run_each_and_closed_hours_build_once():
    with dg.instance_for_test() as instance:
        automation = Automation(instance)
        requests = {}
        for tick in range(20):  # ten minutes of micro-batches, one per 30 s sensor tick
            now = at("10:01:01") + timedelta(seconds=30 * tick)
            automation.land("10:00")
            requests[now.strftime("%H:%M:%S")] = automation.tick(now)
        assert {t: r for t, r in requests.items() if r} == {"10:05:01": {"2026-11-26-10:00"},
                                                            "10:10:01": {"2026-11-26-10:00"}}
        automation.land("10:00")  # the hour's last micro-batch, drained just after it closed
        assert automation.tick(at("11:05:01")) == {"2026-11-26-10:00", "2026-11-26-11:00"}
        assert automation.tick(at("11:10:01")) == {"2026-11-26-11:00"}  # 10:00 is done
        automation.land("10:00")  # a late event (or a replay) lands in the closed hour
        assert automation.tick(at("11:12:01")) == set()  # not before the next refresh tick
        assert automation.tick(at("11:15:01")) == {"2026-11-26-10:00", "2026-11-26-11:00"}
