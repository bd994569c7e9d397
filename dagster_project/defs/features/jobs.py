"""The features stage's jobs."""

from dagster_project.selections import FEATURES_FIT, FEATURES_SHOP, VECTORS, stage_job

features_shop_job = stage_job(
    "features_shop_job",
    FEATURES_SHOP,
    description="Per shop: enriched sessions, product embeddings, raw buyer features.",
)

features_fit_job = stage_job(
    "features_fit_job",
    FEATURES_FIT,
    description="Sample the training shops and fit the feature transform.",
)

vectors_job = stage_job(
    "vectors_job",
    VECTORS,
    description="Per shop: 403-d buyer vectors with the current feature transform.",
)

jobs = [features_shop_job, features_fit_job, vectors_job]
