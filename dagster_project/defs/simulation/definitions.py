"""Simulation: the Markov policy, the population simulation and the instruction tasks."""

import dagster as dg

from dagster_project.defs.simulation import assets, jobs

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([assets]),
    jobs=jobs.jobs,
)
