"""The SimPersona code location."""

from __future__ import annotations

import dagster as dg

from dagster_project.assets import features, ingest, personas, traces
from dagster_project.jobs import (
    catalog_job,
    events_job,
    features_fit_job,
    features_shop_job,
    personas_fit_job,
    personas_report_job,
    personas_shop_job,
    quarantine_job,
    sft_job,
    traces_shop_job,
    vectors_job,
)
from dagster_project.resources import default_resources
from dagster_project.schedules import nightly_ingest_schedule
from dagster_project.sensors import lake_sensor

all_assets = dg.load_assets_from_modules([ingest, features, personas, traces])

defs = dg.Definitions(
    assets=all_assets,
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
    ],
    schedules=[nightly_ingest_schedule],
    sensors=[lake_sensor],
    resources=default_resources(),
)
