"""The simulation stage's jobs."""

from dagster_project.selections import SIMULATION_SHOP, stage_job

simulation_shop_job = stage_job(
    "simulation_shop_job",
    SIMULATION_SHOP,
    description="Per evaluation shop: the population simulation and the instruction tasks.",
)

jobs = [simulation_shop_job]
