"""Evaluation: the report over every simulated evaluation shop."""

import dagster as dg

from dagster_project.defs.evaluation import assets, jobs

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([assets]),
    jobs=jobs.jobs,
)
