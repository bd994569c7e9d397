"""Enrichment and features: sessions, product embeddings, buyer features, the training sample, the feature transform and buyer vectors."""

import dagster as dg

from dagster_project.defs.features import assets, checks, jobs

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([assets]),
    asset_checks=checks.checks,
    jobs=jobs.jobs,
)
