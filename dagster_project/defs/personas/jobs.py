"""The personas stage's jobs."""

from dagster_project.selections import PERSONAS_FIT, PERSONAS_REPORT, PERSONAS_SHOP, stage_job

personas_fit_job = stage_job(
    "personas_fit_job",
    PERSONAS_FIT,
    description="Train the VQ-VAE and the k-means baseline; the Table-1 codebook report.",
)

personas_shop_job = stage_job(
    "personas_shop_job",
    PERSONAS_SHOP,
    description="Per shop: persona token of every buyer and the shop's token distribution.",
)

personas_report_job = stage_job(
    "personas_report_job",
    PERSONAS_REPORT,
    description="Across shops: stratum/feature recovery (JS, R²) and the persona cards.",
)

jobs = [personas_fit_job, personas_shop_job, personas_report_job]
