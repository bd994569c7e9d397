"""The SimPersona code location."""

from __future__ import annotations

import dagster as dg

from dagster_project.assets import (
    features,
    grounding,
    ingest,
    personas,
    probe,
    simulation,
    traces,
)
from dagster_project.checks import all_checks
from dagster_project.jobs import (
    catalog_job,
    evaluation_job,
    events_job,
    features_fit_job,
    features_shop_job,
    personas_fit_job,
    personas_report_job,
    personas_shop_job,
    quarantine_job,
    sft_job,
    shop_refresh_job,
    simulation_shop_job,
    traces_shop_job,
    vectors_job,
)
from dagster_project.resources import default_resources
from dagster_project.run_job import simpersona_run_job
from dagster_project.schedules import nightly_ingest_schedule
from dagster_project.sensors import lake_sensor, shop_refresh_sensor

all_assets = dg.load_assets_from_modules(
    [ingest, features, personas, traces, grounding, probe, simulation]
)

defs = dg.Definitions(
    assets=all_assets,
    asset_checks=all_checks,
    jobs=[
        catalog_job,
        events_job,
        quarantine_job,
        features_shop_job,
        features_fit_job,
        vectors_job,
        personas_fit_job,
        personas_shop_job,
        personas_report_job,
        traces_shop_job,
        sft_job,
        shop_refresh_job,
        simulation_shop_job,
        evaluation_job,
        simpersona_run_job,
    ],
    schedules=[nightly_ingest_schedule],
    sensors=[lake_sensor, shop_refresh_sensor],
    # One process per run: parallelism comes from runs (one per partition); per-step
    # processes would each spend ~10 s importing torch and this code location.
    executor=dg.in_process_executor,
    resources=default_resources(),
)
