"""Jobs: one per partitioning scheme (a Dagster job has a single partitions definition,
inferred from its assets)."""

from __future__ import annotations

import dagster as dg

# Each stage's assets, defined once: the jobs below, the CLI's in-process runs
# (dagster_project/run.py) and the demo all select them from here.
CATALOG = ("catalog",)
EVENTS = ("raw_events",)
QUARANTINE = ("quarantine",)
FEATURES_SHOP = ("enriched_sessions", "product_embeddings", "buyer_features")
FEATURES_FIT = ("training_sample", "feature_transform")
VECTORS = ("buyer_vectors",)
PERSONAS_FIT = ("persona_codebook", "codebook_report")
PERSONAS_SHOP = ("persona_assignments", "store_token_distribution")
PERSONAS_REPORT = ("distribution_recovery", "persona_cards")
TRACES_SHOP = ("replayed_traces",)
SFT = ("sft_stage1", "sft_stage2")
SIMULATION_SHOP = ("population_simulation", "instruction_following")
EVALUATION = ("evaluation_report",)

catalog_job = dg.define_asset_job(
    "catalog_job",
    selection=dg.AssetSelection.assets(*CATALOG),
    description="Validate one shop's products and collections.",
)

events_job = dg.define_asset_job(
    "events_job",
    selection=dg.AssetSelection.assets(*EVENTS),
    description="Validate, sessionize and de-identify one shop-day of events.",
)

quarantine_job = dg.define_asset_job(
    "quarantine_job",
    selection=dg.AssetSelection.assets(*QUARANTINE),
    description="Roll up the quarantine and refresh the DuckDB views.",
)

features_shop_job = dg.define_asset_job(
    "features_shop_job",
    selection=dg.AssetSelection.assets(*FEATURES_SHOP),
    description="Per shop: enriched sessions, product embeddings, raw buyer features.",
)

features_fit_job = dg.define_asset_job(
    "features_fit_job",
    selection=dg.AssetSelection.assets(*FEATURES_FIT),
    description="Sample the training shops and fit the feature transform.",
)

vectors_job = dg.define_asset_job(
    "vectors_job",
    selection=dg.AssetSelection.assets(*VECTORS),
    description="Per shop: 403-d buyer vectors with the current feature transform.",
)

personas_fit_job = dg.define_asset_job(
    "personas_fit_job",
    selection=dg.AssetSelection.assets(*PERSONAS_FIT),
    description="Train the VQ-VAE and the k-means baseline; the Table-1 codebook report.",
)

personas_shop_job = dg.define_asset_job(
    "personas_shop_job",
    selection=dg.AssetSelection.assets(*PERSONAS_SHOP),
    description="Per shop: persona token of every buyer and the shop's token distribution.",
)

personas_report_job = dg.define_asset_job(
    "personas_report_job",
    selection=dg.AssetSelection.assets(*PERSONAS_REPORT),
    description="Across shops: stratum/feature recovery (JS, R²) and the persona cards.",
)

traces_shop_job = dg.define_asset_job(
    "traces_shop_job",
    selection=dg.AssetSelection.assets(*TRACES_SHOP),
    description="Per shop: goals, replay on the storefront in the browser, judge.",
)

sft_job = dg.define_asset_job(
    "sft_job",
    selection=dg.AssetSelection.assets(*SFT),
    description="The stage-1 and stage-2 SFT datasets from the training shops' traces.",
)

# What the nightly ingest refreshes per shop (after the shop's ingest runs succeed): the
# shop's sessions, embeddings and features, and — once the feature transform and the codebook
# have been fitted — its vectors, persona assignments and token distribution. The fitted
# assets themselves (training_sample, feature_transform, persona_codebook) are refit on demand.
SHOP_REFRESH_ASSETS = (
    "enriched_sessions",
    "product_embeddings",
    "buyer_features",
    "buyer_vectors",
    "persona_assignments",
    "store_token_distribution",
)

shop_refresh_job = dg.define_asset_job(
    "shop_refresh_job",
    selection=dg.AssetSelection.assets(*SHOP_REFRESH_ASSETS),
    executor_def=dg.in_process_executor,
    description=(
        "Per shop, after new events: enriched sessions → buyer features → buyer vectors → "
        "persona assignments → store token distribution (one process, steps in order)."
    ),
)

simulation_shop_job = dg.define_asset_job(
    "simulation_shop_job",
    selection=dg.AssetSelection.assets(*SIMULATION_SHOP),
    description="Per evaluation shop: the population simulation and the instruction tasks.",
)

evaluation_job = dg.define_asset_job(
    "evaluation_job",
    selection=dg.AssetSelection.assets(*EVALUATION),
    description="The evaluation report over every simulated evaluation shop.",
)
