"""Refresh a shop's downstream assets after its new events are ingested (the lake sensor that
requests the ingestion is in dagster_project/defs/ingest/sensors.py).

Why an explicit refresh job triggered by a run-status sensor rather than declarative
automation (AutomationCondition.eager() on the per-shop assets and the automation sensor),
measured by benchmarks/automation_trial.py (20 shops x 28 days; 6 x 7 with --quick):

- After a shop's new day is ingested, eager() requests nothing downstream of it: the upstream
  is a shop × day multi-partition with two dynamic dimensions, a shop has files for some days
  only, and the days it lacks count as missing parents, so the shop's sessions are never
  refreshed (only its product embeddings, from the catalog).
- After a refit of the feature transform, eager() refreshes every shop's vectors at once
  (20 of 20); the sensor below leaves a refit to the run that asked for it.
- A quiet evaluation costs 3.3 s on 560 shop-day partitions (it grows with the history,
  dagster#23076) and runs every 30 s, night or not; the sensor runs only when an ingest run
  succeeds.
- A shop's nightly ingest can be several runs (one per new day); eager() may start the
  refresh after the first of them. The sensor waits until the shop has no ingest run queued
  or in progress, then requests exactly one refresh run per finished ingest burst, with a
  run key so a tick evaluated twice never launches twice; each decision is a visible sensor
  tick in the UI. (If one of the burst's ingest runs fails, the shop is not refreshed until
  its next successful ingest: a failed partition shows red and the old outputs stay.)
- Product embeddings depend on the catalog, not on events: the sensor includes them only
  when they miss a product or embed an outdated title (loading the model costs 10–60 s).
- The refresh job runs its steps in one process in dependency order (in_process_executor):
  per-step processes would spend ~10 s each importing torch and the code location.
"""

import os

import dagster as dg
import polars as pl

from dagster_project.defs.ingest.jobs import events_job
from dagster_project.defs.refresh.jobs import shop_refresh_job
from dagster_project.resources import WarehouseResource
from dagster_project.selections import SHOP_REFRESH_ASSETS
from simpersona.embeddings import text_hash
from simpersona.warehouse import Warehouse

# Seconds between sensor evaluations (the daemon's default is 30; tests use a few).
SENSOR_INTERVAL_S = int(os.environ.get("SIMPERSONA_SENSOR_INTERVAL_S", "30"))
ACTIVE = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]
# The fitted asset each refresh step needs before it can run.
NEEDS_FIT = {
    "buyer_vectors": "feature_transform",
    "persona_assignments": "persona_codebook",
    "store_token_distribution": "persona_codebook",
}


def embeddings_stale(wh: Warehouse, shop: str) -> bool:
    """Whether the shop's product embeddings miss a product of its catalog or embed an
    outdated title (new events alone never make them stale)."""
    path = wh.partition_path("product_embeddings", shop)
    if not path.exists() or not wh.has_partition("products", shop):
        return True
    have = pl.read_parquet(path, columns=["product_id", "title_hash"])
    products = wh.read_partition("products", shop)
    want = {(p, text_hash(t)) for p, t in products.select("product_id", "title").iter_rows()}
    return set(have.iter_rows()) != want


def refresh_selection(instance: dg.DagsterInstance, wh: Warehouse, shop: str) -> list[dg.AssetKey]:
    """The refresh steps for `shop`: product embeddings only when stale, the steps after
    the fits only once the fitted inputs exist on this instance."""
    fitted = {
        name
        for name in set(NEEDS_FIT.values())
        if instance.get_latest_materialization_event(dg.AssetKey(name)) is not None
    }
    skip = set() if embeddings_stale(wh, shop) else {"product_embeddings"}
    return [
        dg.AssetKey(a)
        for a in SHOP_REFRESH_ASSETS
        if a not in skip and (a not in NEEDS_FIT or NEEDS_FIT[a] in fitted)
    ]


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[events_job],
    request_job=shop_refresh_job,
    minimum_interval_seconds=SENSOR_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "When a shop-day ingest run succeeds and the shop has no other ingest run pending, "
        "refresh the shop's downstream assets (sessions → features → vectors → personas)."
    ),
)
def shop_refresh_sensor(context: dg.RunStatusSensorContext, warehouse: WarehouseResource):
    run = context.dagster_run
    shop = run.tags.get("dagster/partition/shop")
    if not shop:
        return dg.SkipReason(f"run {run.run_id} has no shop partition tag")
    pending = context.instance.get_run_ids(
        dg.RunsFilter(
            job_name=events_job.name, statuses=ACTIVE, tags={"dagster/partition/shop": shop}
        ),
        limit=1,
    )
    if pending:
        return dg.SkipReason(f"shop {shop} has ingest runs pending ({pending[0]}); waiting")
    selection = refresh_selection(context.instance, warehouse.warehouse(), shop)
    return dg.RunRequest(
        run_key=f"refresh:{shop}:{run.run_id}",
        partition_key=shop,
        asset_selection=selection,
        tags={"simpersona/after_run": run.run_id, "simpersona/trigger": "ingest"},
    )
