"""The traces stage's jobs."""

from dagster_project.selections import SFT, STORE_WALKS, TRACES_SHOP, stage_job

traces_shop_job = stage_job(
    "traces_shop_job",
    TRACES_SHOP,
    description="Per shop: goals, replay on the storefront in the browser, judge.",
)

store_walks_job = stage_job(
    "store_walks_job",
    STORE_WALKS,
    description="Per training shop: its personas walk its storefront to a goal (needs markov_policy).",
)

sft_job = stage_job(
    "sft_job",
    SFT,
    description="The stage-1 and stage-2 SFT datasets from the training shops' traces.",
)

jobs = [traces_shop_job, store_walks_job, sft_job]
