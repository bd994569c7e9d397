"""Traces: goals replayed on the storefront in the browser, and the SFT datasets."""

import dagster as dg

from dagster_project.defs.traces import assets, jobs

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([assets]),
    jobs=jobs.jobs,
)
