"""The ingest stage's jobs."""

from dagster_project.selections import CATALOG, EVENTS, QUARANTINE, stage_job

catalog_job = stage_job(
    "catalog_job",
    CATALOG,
    description="Validate one shop's products and collections.",
)

events_job = stage_job(
    "events_job",
    EVENTS,
    description="Validate, sessionize and de-identify one shop-day of events.",
)

quarantine_job = stage_job(
    "quarantine_job",
    QUARANTINE,
    description="Roll up the quarantine and refresh the DuckDB views.",
)

jobs = [catalog_job, events_job, quarantine_job]
