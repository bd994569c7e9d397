"""Import and ingestion: catalogues, shop-day events, the quarantine; the lake sensor and the nightly schedule."""

import dagster as dg

from dagster_project.defs.ingest import assets, checks, jobs, schedules, sensors

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([assets]),
    asset_checks=checks.checks,
    jobs=jobs.jobs,
    schedules=[schedules.nightly_ingest_schedule],
    sensors=[sensors.lake_sensor],
)
