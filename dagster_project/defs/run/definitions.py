"""`simpersona run` as a job, for the UI."""

import dagster as dg

from dagster_project.defs.run import jobs

defs = dg.Definitions(
    jobs=[jobs.simpersona_run_job],
)
