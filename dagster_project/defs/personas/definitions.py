"""Personas: the VQ-VAE codebook and its k-means baseline, assignments, token distributions, recovery and cards."""

import dagster as dg

from dagster_project.defs.personas import assets, checks, jobs

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([assets]),
    asset_checks=checks.checks,
    jobs=jobs.jobs,
)
