"""Schedules: nightly ingestion of the new day's logs for every shop."""

import datetime as dt

import dagster as dg

from dagster_project.jobs import events_job
from dagster_project.partitions import day_partitions, shop_day_key, shop_partitions
from dagster_project.resources import LakeResource


@dg.schedule(
    job=events_job,
    cron_schedule="0 2 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="At 02:00 UTC, ingest yesterday's partition of every shop that has files for it.",
)
def nightly_ingest_schedule(context: dg.ScheduleEvaluationContext, lake: LakeResource):
    tick = context.scheduled_execution_time or dt.datetime.now(dt.UTC)
    day = (tick.date() - dt.timedelta(days=1)).isoformat()
    lk = lake.lake()
    shops = [s for s in lk.shops() if day in lk.dates(s)]
    if not shops:
        return dg.SkipReason(f"no shop has raw files for {day}")
    known_shops = set(context.instance.get_dynamic_partitions(shop_partitions.name))
    new_shops = sorted(set(shops) - known_shops)
    if new_shops:
        context.instance.add_dynamic_partitions(shop_partitions.name, new_shops)
    if not context.instance.has_dynamic_partition(day_partitions.name, day):
        context.instance.add_dynamic_partitions(day_partitions.name, [day])
    return [
        dg.RunRequest(run_key=f"nightly:{shop}:{day}", partition_key=shop_day_key(shop, day))
        for shop in shops
    ]
