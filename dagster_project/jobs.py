"""Jobs: one per partitioning scheme (a Dagster job has a single partitions definition,
inferred from its assets)."""

from __future__ import annotations

import dagster as dg

catalog_job = dg.define_asset_job(
    "catalog_job",
    selection=dg.AssetSelection.assets("catalog"),
    description="Validate one shop's products and collections.",
)

events_job = dg.define_asset_job(
    "events_job",
    selection=dg.AssetSelection.assets("raw_events"),
    description="Validate, sessionize and de-identify one shop-day of events.",
)

quarantine_job = dg.define_asset_job(
    "quarantine_job",
    selection=dg.AssetSelection.assets("quarantine"),
    description="Roll up the quarantine and refresh the DuckDB views.",
)
