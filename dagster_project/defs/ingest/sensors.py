"""The lake sensor: notice new shops, days and files in the lake and request their
ingestion."""

import time

import dagster as dg

from dagster_project.defs.ingest.jobs import catalog_job, events_job
from dagster_project.defs.refresh.sensors import SENSOR_INTERVAL_S
from dagster_project.partitions import DAYS, SHOPS, day_partitions, shop_day_key, shop_partitions
from dagster_project.resources import LakeResource


@dg.sensor(
    jobs=[catalog_job, events_job],
    minimum_interval_seconds=SENSOR_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Registers new shops and days of the lake as partitions and requests ingestion of "
        "every catalog and shop-day whose raw files changed since the last tick (on the "
        "first tick: those never materialized)."
    ),
)
def lake_sensor(context: dg.SensorEvaluationContext, lake: LakeResource) -> dg.SensorResult:
    started_ns = time.time_ns()
    since_ns = int(context.cursor) if context.cursor else 0
    changes = lake.lake().changed_since(since_ns)
    known_shops = set(context.instance.get_dynamic_partitions(SHOPS))
    known_days = set(context.instance.get_dynamic_partitions(DAYS))
    new_shops = sorted(set(changes.shops) - known_shops)
    new_days = sorted(changes.days - known_days)
    requests = []
    if new_shops:
        requests.append(shop_partitions.build_add_request(new_shops))
    if new_days:
        requests.append(day_partitions.build_add_request(new_days))
    catalogs = sorted(set(changes.catalogs))
    partitions = list(changes.partitions)
    if not context.cursor:  # first tick: the lake may have been ingested from the CLI already
        done = context.instance.get_materialized_partitions(dg.AssetKey("catalog"))
        catalogs = [s for s in catalogs if s not in done]
        done = context.instance.get_materialized_partitions(dg.AssetKey("raw_events"))
        partitions = [(s, d) for s, d in partitions if str(shop_day_key(s, d)) not in done]
    runs = [
        dg.RunRequest(
            run_key=f"catalog:{shop}:{started_ns}", job_name=catalog_job.name, partition_key=shop
        )
        for shop in catalogs
    ]
    runs += [
        dg.RunRequest(
            run_key=f"events:{shop}:{date}:{started_ns}",
            job_name=events_job.name,
            partition_key=shop_day_key(shop, date),
        )
        for shop, date in partitions
    ]
    if new_shops or new_days or runs:
        context.log.info(
            f"{len(new_shops)} new shops, {len(new_days)} new days, {len(runs)} runs requested"
        )
    return dg.SensorResult(
        run_requests=runs, dynamic_partitions_requests=requests, cursor=str(started_ns)
    )
