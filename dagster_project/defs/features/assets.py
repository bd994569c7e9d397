"""Enrich and features stages: enriched sessions, product embeddings, buyer features, the
training sample, the fitted feature transform and the 403-d buyer vectors."""

import json

import dagster as dg
import polars as pl
from pydantic import Field

from dagster_project.partitions import shop_partitions
from dagster_project.record import record
from dagster_project.resources import (
    ArtifactsResource,
    EmbeddingResource,
    MLflowResource,
    WarehouseResource,
    require_partitions,
)
from simpersona.features.enrich import enrich_sessions
from simpersona.features.labels import BIN_NAMES, HEADS, class_weights
from simpersona.features.sample import (
    SampleConfig,
    build_training_sample,
    split_shops,
)
from simpersona.features.scalars import CHANNELS, STRATA, buyer_features_from_sessions
from simpersona.features.transform import VECTOR_DIM, FeatureTransform
from simpersona.features.vectors import (
    ProductEmbeddings,
    fit_feature_transform,
    iter_buyer_vectors,
    label_columns,
    write_buyer_vectors,
)
from simpersona.lake import atomic_write_parquet, atomic_write_text
from simpersona.markdown import counts_to_markdown, frame_to_markdown
from simpersona.warehouse import SHOP_SPLIT_FILE


def _shares(series: pl.Series, labels: list[str] | tuple[str, ...]) -> dict[str, float]:
    n = series.len()
    counts = dict(series.value_counts().iter_rows())
    return {str(k): round(counts.get(k, 0) / n, 4) if n else 0.0 for k in labels}


def _strata_mix(df: pl.DataFrame) -> dict[str, float]:
    return _shares(df["stratum"], STRATA)


# ---- enrich ------------------------------------------------------------------------------
@dg.asset(
    group_name="enrich",
    partitions_def=shop_partitions,
    deps=["raw_events"],
    kinds={"polars", "parquet"},
    description=(
        "Buyer–session records of a shop: counts, duration, cart and order values, and the "
        "session's events in time order with product titles, collection names and queries."
    ),
)
def enriched_sessions(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, mlflow: MLflowResource
) -> dg.MaterializeResult:
    shop = context.partition_key
    wh = warehouse.warehouse()
    events = wh.read_events(shop)
    if events.is_empty():
        raise dg.Failure(f"shop {shop} has no ingested events; materialize raw_events first")
    sessions = enrich_sessions(
        events, wh.read_partition("products", shop), wh.read_partition("collections", shop)
    )
    path = atomic_write_parquet(sessions, wh.partition_path("enriched_sessions", shop))
    figures = {
        "sessions": sessions.height,
        "buyers": sessions["buyer_id"].n_unique(),
        "events": events.height,
        "median_duration_s": float(sessions["duration_s"].median() or 0.0),
        "sessions_with_cart": int((sessions["n_add_to_cart"] > 0).sum()),
        "sessions_with_order": int((sessions["n_checkout_completed"] > 0).sum()),
    }
    preview = sessions.head(8).select(
        "buyer_id", "start", "n_events", "duration_s", "viewed_products", "searches"
    )
    return record(
        context,
        mlflow,
        figures,
        tags={"shop": shop},
        metadata={"preview": dg.MetadataValue.md(frame_to_markdown(preview))},
        rows=sessions.height,
        path=path,
    )


# ---- features ----------------------------------------------------------------------------
@dg.asset(
    group_name="features",
    partitions_def=shop_partitions,
    deps=[dg.AssetKey("catalog")],
    kinds={"sentence-transformers", "parquet"},
    description="Title embeddings of a shop's products (cached by model and title hash).",
)
def product_embeddings(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    embeddings: EmbeddingResource,
    mlflow: MLflowResource,
) -> dg.MaterializeResult:
    from simpersona.embeddings import embed_products

    shop = context.partition_key
    wh = warehouse.warehouse()
    products = wh.read_partition("products", shop)
    embedder = embeddings.embedder()
    res = embed_products(products, embedder, embeddings.cache(), progress=True)
    path = atomic_write_parquet(res.embeddings, wh.partition_path("product_embeddings", shop))
    figures = {
        "products": res.embeddings.height,
        "embedded_now": res.computed,
        "from_cache": res.cached,
        "dim": embedder.dim,
        "seconds": round(res.seconds, 3),
    }
    return record(
        context,
        mlflow,
        figures,
        tags={"shop": shop},
        params={"model": embeddings.model, "model_id": embedder.model_id},
        metadata={"model_id": embedder.model_id},
        rows=res.embeddings.height,
        path=path,
    )


@dg.asset(
    group_name="features",
    partitions_def=shop_partitions,
    deps=[enriched_sessions],
    kinds={"polars", "parquet"},
    description=(
        "Per buyer–shop pair: the 16 raw behavioural scalars, the funnel stratum A–E, the "
        "auxiliary-label inputs and the products of the viewed/carted/purchased channels."
    ),
)
def buyer_features(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, mlflow: MLflowResource
) -> dg.MaterializeResult:
    shop = context.partition_key
    wh = warehouse.warehouse()
    sessions = pl.scan_parquet(wh.partition_path("enriched_sessions", shop)).drop("events")
    feats = buyer_features_from_sessions(sessions)
    path = atomic_write_parquet(feats, wh.partition_path("buyer_features", shop))
    mix = _strata_mix(feats)
    figures = {"buyers": feats.height, **{f"stratum_{k}_share": v for k, v in mix.items()}}
    preview = feats.head(8).select(
        "buyer_id", "stratum", "sessions", "atc_sessions", "purchase_sessions", "intent_strength"
    )
    return record(
        context,
        mlflow,
        {"buyers": feats.height},
        tags={"shop": shop},
        metrics=figures,
        metadata={
            "strata_mix": dg.MetadataValue.md(counts_to_markdown(mix, "stratum", "share")),
            "preview": dg.MetadataValue.md(frame_to_markdown(preview)),
        },
        rows=feats.height,
        path=path,
    )


class TrainingSampleConfig(dg.Config):
    per_shop: int = Field(default=1_500, description="Most buyer–shop pairs per training shop.")
    per_stratum: int = Field(default=300, description="Most pairs per stratum and shop.")
    val_fraction: float = Field(default=0.15, description="Validation share.")
    train_shops: list[str] | None = Field(default=None, description="Explicit training shops.")
    eval_shops: list[str] | None = Field(default=None, description="Explicit evaluation shops.")
    eval_fraction: float = Field(
        default=0.5,
        description="Share of shops held out for evaluation in the seeded split (with a "
        "single shop: the share of its buyers held out of training).",
    )
    seed: int = Field(default=0, description="Seed of the shop split and the sample.")


@dg.asset(
    group_name="features",
    deps=[buyer_features],
    kinds={"polars", "parquet"},
    description=(
        "Balanced training set: training and evaluation shops disjoint; per training shop up "
        "to 1,500 pairs, at most 300 per stratum, stratum E dropped; 85/15 split."
    ),
)
def training_sample(
    context: dg.AssetExecutionContext,
    config: TrainingSampleConfig,
    warehouse: WarehouseResource,
    mlflow: MLflowResource,
) -> dg.MaterializeResult:
    wh = warehouse.warehouse()
    shops = wh.shops_with("buyer_features")
    if not shops:
        raise dg.Failure("no buyer_features partition is materialized")
    cfg = SampleConfig(
        per_shop=config.per_shop,
        per_stratum=config.per_stratum,
        val_fraction=config.val_fraction,
        train_shops=config.train_shops,
        eval_shops=config.eval_shops,
        eval_fraction=config.eval_fraction,
        seed=config.seed,
    )
    try:
        split = split_shops(shops, cfg)
    except ValueError as exc:
        raise dg.Failure(f"{exc} (shops with buyer features: {shops})") from exc
    buyers = wh.read_shops("buyer_features", split.train, ["shop_id", "buyer_id", "stratum"])
    built = build_training_sample(split, buyers, cfg)
    sample = built.rows
    if sample.is_empty():
        raise dg.Failure(f"the training shops {split.train} have no buyers in strata A–D")
    if built.holdout_buyers is not None:
        context.log.warning(
            f"one shop ({split.train[0]}): {built.holdout_buyers:,} of its buyers are held out "
            "of training instead of a shop; cross-store recovery is undefined"
        )
    path = atomic_write_parquet(sample, wh.table_path("training_sample"))
    split_record = built.split_record(config.eval_fraction)
    atomic_write_text(json.dumps(split_record, indent=2), wh.root / SHOP_SPLIT_FILE)
    by = sample.group_by(["split", "stratum"]).len().sort(["split", "stratum"])
    figures = {
        "rows": sample.height,
        "train_rows": int((sample["split"] == "train").sum()),
        "val_rows": int((sample["split"] == "val").sum()),
        "holdout_buyers": int((sample["split"] == "holdout").sum()),
        "train_shops": len(split.train),
        "eval_shops": len(split.eval),
    }
    return record(
        context,
        mlflow,
        figures,
        params={**cfg.__dict__, "train": split.train, "eval": split.eval},
        metadata={
            "train_shop_list": dg.MetadataValue.json(split.train),
            "eval_shop_list": dg.MetadataValue.json(split.eval),
            "rows_by_split_and_stratum": dg.MetadataValue.md(frame_to_markdown(by, 20)),
        },
        rows=sample.height,
        path=path,
    )


def _embeddings_of(wh, shop: str) -> ProductEmbeddings:
    require_partitions(wh, shop, "product_embeddings")
    return ProductEmbeddings.from_frame(
        pl.read_parquet(wh.partition_path("product_embeddings", shop))
    )


def load_current_transform(artifacts: ArtifactsResource) -> FeatureTransform:
    return FeatureTransform.load(artifacts.current("feature_transform")[1])


class FeatureTransformConfig(dg.Config):
    seed: int = Field(default=0, description="Seed of the PCA solver.")


@dg.asset(
    group_name="features",
    deps=[training_sample, product_embeddings],
    kinds={"scikit-learn", "mlflow"},
    description=(
        "Robust-z statistics of the 16 scalars, per-dimension z + PCA to 128 dims of each "
        "product channel and the label edges, fitted on the training split; versioned."
    ),
)
def feature_transform(
    context: dg.AssetExecutionContext,
    config: FeatureTransformConfig,
    warehouse: WarehouseResource,
    artifacts: ArtifactsResource,
    embeddings: EmbeddingResource,
    mlflow: MLflowResource,
) -> dg.MaterializeResult:
    wh = warehouse.warehouse()
    sample = pl.read_parquet(wh.table_path("training_sample")).filter(pl.col("split") == "train")
    shops = sorted(sample["shop_id"].unique().to_list())
    feats = pl.concat(
        [
            pl.read_parquet(wh.partition_path("buyer_features", s)).join(
                sample.select("shop_id", "buyer_id"), on=["shop_id", "buyer_id"], how="semi"
            )
            for s in shops
        ]
    )
    embs = {s: _embeddings_of(wh, s) for s in shops}
    model_id = embeddings.embedder().model_id
    tf = fit_feature_transform(feats, embs, model_id, seed=config.seed)
    bins = label_columns(feats, tf)
    weights = {h: class_weights(bins[f"{h}_bin"].to_numpy()).round(4).tolist() for h in HEADS}
    tf.fitted_on["class_weights"] = weights
    staged = tf.save(artifacts.staging_folder("feature_transform", tf.version))
    folder = artifacts.publish("feature_transform", tf.version, staged)
    explained = {c: round(tf.channels[c].explained_variance_ratio, 4) for c in CHANNELS}
    figures = {f"explained_variance_{c}": v for c, v in explained.items()} | {
        "fit_buyers": feats.height
    }
    edges = {
        "engagement (log1p seconds)": [round(x, 4) for x in tf.engagement_edges],
        "exploration (log1p sessions)": [round(x, 4) for x in tf.exploration_edges],
        "purchase (s_pur)": list(tf.purchase_edges),
    }
    return record(
        context,
        mlflow,
        figures,
        tags={"transform_version": tf.version},
        params={"version": tf.version, "embedding_model_id": model_id, "shops": shops},
        artifacts=[(folder / f, "feature_transform") for f in ("transform.npz", "transform.json")],
        metadata={
            "version": tf.version,
            "label_edges": dg.MetadataValue.json(edges),
            "class_weights": dg.MetadataValue.json(weights),
        },
        path=folder,
    )


@dg.asset(
    group_name="features",
    partitions_def=shop_partitions,
    deps=[buyer_features, product_embeddings, feature_transform],
    kinds={"numpy", "parquet"},
    description=(
        f"{VECTOR_DIM}-d vector of every buyer–shop pair (16 robust-z scalars, 3×128 PCA "
        "product channels, 3 masks), with stratum and Low/Medium/High bins."
    ),
)
def buyer_vectors(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    artifacts: ArtifactsResource,
    mlflow: MLflowResource,
) -> dg.MaterializeResult:
    shop = context.partition_key
    wh = warehouse.warehouse()
    tf = load_current_transform(artifacts)
    feats = pl.read_parquet(wh.partition_path("buyer_features", shop))
    emb = _embeddings_of(wh, shop)
    path = wh.partition_path("buyer_vectors", shop)
    rows = write_buyer_vectors(iter_buyer_vectors(feats, emb, tf), path)
    meta = pl.scan_parquet(path).drop("vector").collect()
    masks = (
        pl.scan_parquet(path)
        .select(
            pl.col("vector").arr.get(VECTOR_DIM - 3 + i).alias(c) for i, c in enumerate(CHANNELS)
        )
        .mean()
        .collect()
        .row(0)
    )
    mix = _strata_mix(meta)
    bin_shares = {h: _shares(meta[f"{h}_bin"].cast(pl.String), ["0", "1", "2"]) for h in HEADS}
    figures = {
        "buyers": rows,
        **{f"stratum_{k}_share": v for k, v in mix.items()},
        **{f"{c}_observed_share": round(float(m), 4) for c, m in zip(CHANNELS, masks, strict=True)},
        **{
            f"{h}_{BIN_NAMES[int(b)].lower()}_share": v
            for h, d in bin_shares.items()
            for b, v in d.items()
        },
    }
    return record(
        context,
        mlflow,
        figures,
        tags={"shop": shop, "transform_version": tf.version},
        metadata={
            "transform_version": tf.version,
            "strata_mix": dg.MetadataValue.md(counts_to_markdown(mix, "stratum", "share")),
            "preview": dg.MetadataValue.md(frame_to_markdown(meta.head(8))),
        },
        rows=rows,
        path=path,
    )


__all__ = [
    "buyer_features",
    "buyer_vectors",
    "enriched_sessions",
    "feature_transform",
    "product_embeddings",
    "training_sample",
]
