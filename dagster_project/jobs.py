"""Jobs: one per partitioning scheme (a Dagster job has a single partitions definition,
inferred from its assets)."""

from __future__ import annotations

import dagster as dg

catalog_job = dg.define_asset_job(
    "catalog_job",
    selection=dg.AssetSelection.assets("catalog"),
    description="Validate one shop's products and collections.",
)

events_job = dg.define_asset_job(
    "events_job",
    selection=dg.AssetSelection.assets("raw_events"),
    description="Validate, sessionize and de-identify one shop-day of events.",
)

quarantine_job = dg.define_asset_job(
    "quarantine_job",
    selection=dg.AssetSelection.assets("quarantine"),
    description="Roll up the quarantine and refresh the DuckDB views.",
)

features_shop_job = dg.define_asset_job(
    "features_shop_job",
    selection=dg.AssetSelection.assets("enriched_sessions", "product_embeddings", "buyer_features"),
    description="Per shop: enriched sessions, product embeddings, raw buyer features.",
)

features_fit_job = dg.define_asset_job(
    "features_fit_job",
    selection=dg.AssetSelection.assets("training_sample", "feature_transform"),
    description="Sample the training shops and fit the feature transform.",
)

vectors_job = dg.define_asset_job(
    "vectors_job",
    selection=dg.AssetSelection.assets("buyer_vectors"),
    description="Per shop: 403-d buyer vectors with the current feature transform.",
)

personas_fit_job = dg.define_asset_job(
    "personas_fit_job",
    selection=dg.AssetSelection.assets("persona_codebook", "codebook_report"),
    description="Train the VQ-VAE and the k-means baseline; the Table-1 codebook report.",
)

personas_shop_job = dg.define_asset_job(
    "personas_shop_job",
    selection=dg.AssetSelection.assets("persona_assignments", "store_token_distribution"),
    description="Per shop: persona token of every buyer and the shop's token distribution.",
)

personas_report_job = dg.define_asset_job(
    "personas_report_job",
    selection=dg.AssetSelection.assets("distribution_recovery", "persona_cards"),
    description="Across shops: stratum/feature recovery (JS, R²) and the persona cards.",
)

traces_shop_job = dg.define_asset_job(
    "traces_shop_job",
    selection=dg.AssetSelection.assets("replayed_traces"),
    description="Per shop: goals, replay on the storefront in the browser, judge.",
)

sft_job = dg.define_asset_job(
    "sft_job",
    selection=dg.AssetSelection.assets("sft_stage1", "sft_stage2"),
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
    selection=dg.AssetSelection.assets("population_simulation", "instruction_following"),
    description="Per evaluation shop: the population simulation and the instruction tasks.",
)

evaluation_job = dg.define_asset_job(
    "evaluation_job",
    selection=dg.AssetSelection.assets("evaluation_report"),
    description="The evaluation report over every simulated evaluation shop.",
)
