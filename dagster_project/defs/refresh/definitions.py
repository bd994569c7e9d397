"""The per-shop refresh after new events: its job and run-status sensor."""

import dagster as dg

from dagster_project.defs.refresh import jobs, sensors

defs = dg.Definitions(
    jobs=jobs.jobs,
    sensors=[sensors.shop_refresh_sensor],
)
