"""Each stage's assets, defined once: the stages' jobs (dagster_project/defs/*/jobs.py),
the refresh sensor, the CLI's in-process runs (dagster_project/run/stages.py) and the demo all
select them from here."""

import dagster as dg

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
STORE_WALKS = ("store_walk_traces",)
SFT = ("sft_stage1", "sft_stage2")
SIMULATION_SHOP = ("population_simulation", "instruction_following")
EVALUATION = ("evaluation_report",)

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


def stage_job(name: str, selection: tuple[str, ...], description: str, **kwargs):
    """A job materializing one stage's selection (a Dagster job has a single partitions
    definition, inferred from its assets)."""
    return dg.define_asset_job(
        name, selection=dg.AssetSelection.assets(*selection), description=description, **kwargs
    )
