"""The refresh stage's jobs."""

import dagster as dg

from dagster_project.selections import SHOP_REFRESH_ASSETS, stage_job

shop_refresh_job = stage_job(
    "shop_refresh_job",
    SHOP_REFRESH_ASSETS,
    executor_def=dg.in_process_executor,
    description=(
        "Per shop, after new events: enriched sessions → buyer features → buyer vectors → "
        "persona assignments → store token distribution (one process, steps in order)."
    ),
)

jobs = [shop_refresh_job]
