"""Jobs: one per partitioning scheme (a Dagster job has a single partitions definition)."""

from __future__ import annotations

import dagster as dg

from dagster_project.partitions import shop_day_partitions, shop_partitions

catalog_job = dg.define_asset_job(
    "catalog_job",
    selection=dg.AssetSelection.assets("catalog"),
    partitions_def=shop_partitions,
    description="Validate one shop's products and collections.",
)

events_job = dg.define_asset_job(
    "events_job",
    selection=dg.AssetSelection.assets("raw_events"),
    partitions_def=shop_day_partitions,
    description="Validate, sessionize and de-identify one shop-day of events.",
)

quarantine_job = dg.define_asset_job(
    "quarantine_job",
    selection=dg.AssetSelection.assets("quarantine"),
    description="Roll up the quarantine and refresh the DuckDB views.",
)
