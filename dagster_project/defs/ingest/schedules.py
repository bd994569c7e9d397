"""Schedules: nightly ingestion of the new day's logs for every shop.

The schedule requests one `events_job` run per shop with raw files for yesterday (UTC, of
the tick); `shop_refresh_sensor` (sensors.py) then refreshes each shop's downstream assets
once its ingest runs have succeeded. The cron is $SIMPERSONA_NIGHTLY_CRON (default 02:00
UTC); the schedule starts stopped: turn it on in the UI (Automation) or with
`dagster schedule start nightly_ingest_schedule -w workspace.yaml`.
"""

import datetime as dt
import os

import dagster as dg

from dagster_project.defs.ingest.jobs import events_job
from dagster_project.partitions import DAYS, SHOPS, shop_day_key
from dagster_project.resources import LakeResource

NIGHTLY_CRON = os.environ.get("SIMPERSONA_NIGHTLY_CRON", "0 2 * * *")


@dg.schedule(
    job=events_job,
    cron_schedule=NIGHTLY_CRON,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description=(
        f"At '{NIGHTLY_CRON}' (UTC), ingest yesterday's partition of every shop that has files "
        "for it; shop_refresh_sensor then refreshes the shops' downstream assets."
    ),
)
def nightly_ingest_schedule(context: dg.ScheduleEvaluationContext, lake: LakeResource):
    tick = context.scheduled_execution_time or dt.datetime.now(dt.UTC)
    day = (tick.date() - dt.timedelta(days=1)).isoformat()
    lk = lake.lake()
    shops = [s for s in lk.shops() if day in lk.dates(s)]
    if not shops:
        return dg.SkipReason(f"no shop has raw files for {day}")
    known_shops = set(context.instance.get_dynamic_partitions(SHOPS))
    new_shops = sorted(set(shops) - known_shops)
    if new_shops:
        context.instance.add_dynamic_partitions(SHOPS, new_shops)
    if not context.instance.has_dynamic_partition(DAYS, day):
        context.instance.add_dynamic_partitions(DAYS, [day])
    return [
        dg.RunRequest(
            run_key=f"nightly:{shop}:{day}",
            partition_key=shop_day_key(shop, day),
            tags={"simpersona/trigger": "nightly"},
        )
        for shop in shops
    ]
