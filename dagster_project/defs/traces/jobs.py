"""The traces stage's jobs."""

from dagster_project.selections import SFT, TRACES_SHOP, stage_job

traces_shop_job = stage_job(
    "traces_shop_job",
    TRACES_SHOP,
    description="Per shop: goals, replay on the storefront in the browser, judge.",
)

sft_job = stage_job(
    "sft_job",
    SFT,
    description="The stage-1 and stage-2 SFT datasets from the training shops' traces.",
)

jobs = [traces_shop_job, sft_job]
