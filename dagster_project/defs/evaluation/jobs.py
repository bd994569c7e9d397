"""The evaluation stage's jobs."""

from dagster_project.selections import EVALUATION, stage_job

evaluation_job = stage_job(
    "evaluation_job",
    EVALUATION,
    description="The evaluation report over every simulated evaluation shop.",
)

jobs = [evaluation_job]
