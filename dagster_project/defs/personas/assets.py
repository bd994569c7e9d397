"""Personas stage (paper §2.2, App. B): the VQ-VAE codebook and its k-means baseline, the Table-1
codebook report, per-shop persona assignments and token distributions, population recovery
across shops and the persona cards. Thin wrappers: the logic lives in simpersona.personas."""

import base64
import json
import time
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import polars as pl
from pydantic import Field

from dagster_project.config_overrides import overrides_config
from dagster_project.partitions import shop_partitions
from dagster_project.record import record
from dagster_project.resources import (
    DATA_DIR,
    ArtifactsResource,
    BuyerHashResource,
    MLflowResource,
    WarehouseResource,
)
from simpersona.artifacts import current_version
from simpersona.data_warnings import warehouse_warnings
from simpersona.features.labels import HEADS
from simpersona.features.scalars import SCALAR_NAMES, STRATA
from simpersona.lake import atomic_write_parquet, atomic_write_parquet_chunks, atomic_write_text
from simpersona.markdown import counts_to_markdown, frame_to_markdown
from simpersona.personas.codebook_fit import finite_numbers
from simpersona.personas.config import VQVAEConfig
from simpersona.personas.sizing import codebook_size_for

CODEBOOK = "persona_codebook"
_DEFAULTS = VQVAEConfig()  # the "default" preset's values, shown as the config defaults
# Figures of a codebook report worth a flat metadata entry / MLflow metric.
REPORT_KEYS = (
    "n_buyers",
    "used_codes",
    "dead_codes",
    "perplexity",
    "stratum_purity_pct",
    "stratum_purity_weighted_pct",
    "incompatible_mixing_codes",
    *(f"incoherent_{h}_pct" for h in HEADS),
    "pairwise_cosine",
    "calinski_harabasz",
    "calinski_harabasz_behaviour",
    "planted_ari",
    "planted_nmi",
    "planted_majority_ari",
    "planted_majority_accuracy_pct",
)


# ---- helpers -----------------------------------------------------------------------------
def load_codebook(artifacts: ArtifactsResource):
    """(version, VQVAE on CPU in eval mode, KMeansBaseline) of the current codebook."""
    from simpersona.personas.kmeans_baseline import KMeansBaseline
    from simpersona.personas.vqvae import VQVAE

    version, folder = artifacts.current(CODEBOOK)
    return version, VQVAE.load(folder / "vqvae"), KMeansBaseline.load(folder / "kmeans.npz")


def _sample_vectors(wh, splits: tuple[str, ...]) -> pl.DataFrame:
    """Training-sample rows of the given splits joined with their buyer vectors (shop_id,
    buyer_id, split, stratum, bins, vector), in sample order."""
    sample = pl.read_parquet(wh.table_path("training_sample")).filter(
        pl.col("split").is_in(list(splits))
    )
    if sample.is_empty():
        raise dg.Failure(f"the training sample has no rows in splits {splits}")
    parts = []
    for shop in sorted(sample["shop_id"].unique().to_list()):
        path = wh.partition_path("buyer_vectors", shop)
        if not path.exists():
            raise dg.Failure(f"buyer_vectors of training shop {shop} is not materialized")
        keys = sample.filter(pl.col("shop_id") == shop).select("shop_id", "buyer_id", "split")
        vec = pl.read_parquet(path).drop("s_pur", strict=False)
        parts.append(keys.join(vec, on=["shop_id", "buyer_id"], how="inner", maintain_order="left"))
    out = pl.concat(parts)
    if out.height != sample.height:
        raise dg.Failure(
            f"{sample.height - out.height} training-sample buyers have no vector: "
            "re-materialize buyer_vectors"
        )
    return out


def _png_markdown(paths: dict[str, Path]) -> str:
    """Markdown embedding each PNG as a data URI (shows in the Dagster UI) plus its path."""
    out = []
    for name, p in paths.items():
        data = base64.b64encode(Path(p).read_bytes()).decode()
        out.append(f"**{name}** (`{p}`)\n\n![{name}](data:image/png;base64,{data})\n")
    return "\n".join(out)


def _mix(series: pl.Series) -> dict[str, float]:
    n = max(series.len(), 1)
    counts = dict(series.value_counts().iter_rows())
    return {s: round(counts.get(s, 0) / n, 4) for s in STRATA}


# ---- persona_codebook ----------------------------------------------------------------------
VQVAEOverrides = overrides_config(VQVAEConfig, "VQVAEOverrides")


class PersonaCodebookConfig(dg.Config):
    preset: str = Field(
        default="default",
        description="VQ-VAE preset: 'default' (ours) or 'paper' (gate 1 from interaction "
        "counts, squared-norm commitment, no mask group; docs/vqvae.md). The fields below "
        "and `vqvae` apply on top of it.",
    )
    epochs: int = Field(default=_DEFAULTS.epochs, description="Training epochs.")
    min_steps: int = Field(
        default=_DEFAULTS.min_steps,
        description="At least this many optimiser steps (epochs are raised on small sets).",
    )
    batch_size: int = Field(default=_DEFAULTS.batch_size, description="Buyers per step.")
    lr: float = Field(default=_DEFAULTS.lr, description="Adam learning rate.")
    seed: int = Field(default=_DEFAULTS.seed, description="Seed of training and k-means.")
    device: str = Field(
        default="auto", description="'auto' (CUDA when present, else CPU), 'cpu' or 'cuda'."
    )
    num_threads: int = Field(
        default=_DEFAULTS.num_threads or 0,
        description="torch threads while training (1 is fastest on busy CPUs); 0 = torch's.",
    )
    vqvae: VQVAEOverrides = Field(
        default_factory=VQVAEOverrides,
        description="Further VQVAEConfig fields (e.g. lambda_con: 0.3, codebook_size: 128) "
        "on top of the preset and the fields above; unset ones keep the preset's values.",
    )
    codebook_size: int = Field(
        default=0,
        description="Persona tokens K. 0: from the training split's size, about ten buyers "
        "per code and the paper's 256 from 2,560 training buyers (simpersona/personas/"
        "sizing.py); a vqvae.codebook_size counts as given.",
    )
    kmeans_k: int = Field(
        default=0, description="Clusters of the MiniBatch k-means baseline; 0: the same K."
    )
    kmeans_n_init: int = Field(default=3, description="k-means++ initialisations (best kept).")
    kmeans_max_iter: int = Field(default=30, description="Passes over the data.")
    kmeans_batch_size: int = Field(default=2048, description="k-means mini-batch size.")


def _overrides(config: PersonaCodebookConfig) -> dict[str, Any]:
    return config.vqvae.model_dump(exclude_none=True)


def _vqvae_config(
    config: PersonaCodebookConfig, extra: dict[str, Any], codebook_size: int | None = None
) -> VQVAEConfig:
    overrides = _overrides(config)
    if codebook_size is not None:
        overrides["codebook_size"] = codebook_size
    try:
        base = VQVAEConfig.preset(config.preset)
    except ValueError as exc:
        raise dg.Failure(str(exc)) from exc
    d = base.to_dict() | {
        "epochs": config.epochs,
        "min_steps": config.min_steps,
        "batch_size": config.batch_size,
        "lr": config.lr,
        "seed": config.seed,
        "device": config.device,
        "num_threads": config.num_threads or None,
    }
    d |= overrides
    d["extra"] = {**d.get("extra", {}), **extra, "preset": config.preset}
    try:
        return VQVAEConfig.from_dict(d)
    except (TypeError, ValueError) as exc:
        raise dg.Failure(f"invalid VQ-VAE config: {exc}") from exc


@dg.asset(
    group_name="personas",
    deps=["training_sample", "buyer_vectors"],
    kinds={"pytorch", "scikit-learn", "mlflow"},
    description=(
        "The behaviour-aware VQ-VAE (K persona tokens: the paper's 256 on paper-sized training "
        "sets, fewer on small ones) trained on the training sample's train split, and the "
        "MiniBatch k-means baseline on the same vectors; versioned."
    ),
)
def persona_codebook(
    context: dg.AssetExecutionContext,
    config: PersonaCodebookConfig,
    warehouse: WarehouseResource,
    artifacts: ArtifactsResource,
    mlflow: MLflowResource,
) -> dg.MaterializeResult:
    from simpersona.devices import resolve_device
    from simpersona.personas.codebook_fit import (
        KMeansParams,
        codebook_files,
        fit_codebook,
        save_codebook,
    )

    data = _sample_vectors(warehouse.warehouse(), ("train", "val"))
    train, val = data.filter(pl.col("split") == "train"), data.filter(pl.col("split") == "val")
    shops = sorted(train["shop_id"].unique().to_list())
    tf_version = current_version(artifacts.root, "feature_transform")
    requested = config.codebook_size or _overrides(config).get("codebook_size")
    k, k_rule = codebook_size_for(train.height, requested)
    context.log.info(k_rule)
    cfg = _vqvae_config(config, {"train_shops": shops, "transform_version": tf_version}, k)
    km_params = KMeansParams(
        config.kmeans_k or k, config.seed, config.kmeans_batch_size, config.kmeans_n_init,
        config.kmeans_max_iter,
    )  # fmt: skip
    fit = fit_codebook(train, val, cfg, km_params)
    for w in fit.warnings:
        context.log.warning(w)
    device = str(resolve_device(cfg.device))
    staged = artifacts.staging_folder(CODEBOOK, fit.version)
    save_codebook(fit, staged, {
        "train_shops": shops, "transform_version": tf_version, "codebook_size": k,
        "codebook_size_rule": k_rule, "device": device,
    })  # fmt: skip
    folder = artifacts.publish(CODEBOOK, fit.version, staged)
    figures = fit.figures()
    return record(
        context,
        mlflow,
        {"version": fit.version, **figures},
        tags={"codebook_version": fit.version},
        params={
            "version": fit.version,
            "vqvae": cfg.to_dict(),
            "train_shops": shops,
            "kmeans": {"k": km_params.k, **fit.kmeans.params, "seed": config.seed},
            "transform_version": tf_version,
            "device": device,
        },  # fmt: skip
        metrics={f"final.{k}": v for k, v in figures.items()},
        log=fit.log_history,
        artifacts=codebook_files(folder),
        metadata={
            "device": device,
            "codebook_size_rule": k_rule,
            "warnings": dg.MetadataValue.json(fit.warnings),
            "train_shops": dg.MetadataValue.json(shops),
            "history": dg.MetadataValue.md(frame_to_markdown(fit.history_tail())),
            "config": dg.MetadataValue.json(cfg.to_dict()),
        },
        rows=train.height,
        path=folder,
    )


# ---- codebook_report -----------------------------------------------------------------------
class CodebookReportConfig(dg.Config):
    splits: list[str] = Field(
        default=["train"],
        description="Training-sample splits to report on (the paper: its training set).",
    )
    planted_types_path: str = Field(
        default=f"{DATA_DIR}/ground_truth/planted_types.parquet",
        description="Generator ground truth (shop_id, raw buyer_id, planted_type); used for "
        "ARI/NMI when the file exists. Never read by training.",
    )
    purity_ceilings: bool = Field(
        default=True,
        description="Also score (403-d Calinski–Harabasz) the tightest codebooks that keep the "
        "strata, and the strata × bins, apart: what behavioural purity costs on that index. "
        "One k-means per group; turn off to save that time on very large samples.",
    )


def _planted_for(frame: pl.DataFrame, path: str, key: bytes) -> np.ndarray | None:
    """Planted type per row of `frame` (None where unknown), or None without ground truth."""
    from simpersona.ingest.ingest import deidentify_frame

    if not path or not Path(path).exists():
        return None
    gt = pl.read_parquet(path, columns=["shop_id", "buyer_id", "planted_type"])
    gt = deidentify_frame(gt, key)  # raw ids → the warehouse's keyed hashes
    joined = frame.select("shop_id", "buyer_id").join(
        gt, on=["shop_id", "buyer_id"], how="left", maintain_order="left"
    )
    if joined["planted_type"].null_count() == joined.height:
        return None  # ground truth of another dataset
    return joined["planted_type"].to_numpy()


@dg.asset(
    group_name="personas",
    deps=[persona_codebook],
    kinds={"scikit-learn", "mlflow"},
    description=(
        "paper Table 1 for the VQ-VAE and k-means side by side on the training buyers: "
        "purity, incompatible mixing, incoherence, pairwise cosine, Calinski–Harabasz (and its "
        "ceilings for strata-pure codebooks), usage; ARI/NMI against planted types on "
        "generated data."
    ),
)
def codebook_report(
    context: dg.AssetExecutionContext,
    config: CodebookReportConfig,
    warehouse: WarehouseResource,
    artifacts: ArtifactsResource,
    buyer_hash: BuyerHashResource,
    mlflow: MLflowResource,
) -> dg.MaterializeResult:
    from simpersona.personas import quality as q
    from simpersona.personas.assign import assign_tokens
    from simpersona.personas.quality_table import side_by_side

    wh = warehouse.warehouse()
    version, model, km = load_codebook(artifacts)
    data = _sample_vectors(wh, tuple(config.splits))
    x = q.vector_matrix(data["vector"])
    strata, bins = data["stratum"].to_numpy().astype(str), q.bins_matrix(data)
    planted = _planted_for(data, config.planted_types_path, buyer_hash.hash_key())
    k = model.config.codebook_size
    reports = {
        "k-means": q.codebook_report(
            "k-means", km.assign(x), strata, bins, x, planted, k=km.requested_k
        ),
        "VQ-VAE": q.codebook_report(
            "VQ-VAE", assign_tokens(model, x), strata, bins, x, planted, k=k
        ),
    }
    table = side_by_side(reports)
    ceilings = q.purity_ceilings(x, strata, bins, k) if config.purity_ceilings else {}
    if ceilings:
        table += f"\n{q.purity_ceilings_line(ceilings)}.\n"
    folder = artifacts.path("codebook_report", version)
    atomic_write_text(json.dumps(reports, indent=2, default=str), folder / "report.json")
    atomic_write_text(table, folder / "report.md")
    flat = {
        f"{prefix}_{key}": reports[name][key]
        for prefix, name in (("vqvae", "VQ-VAE"), ("kmeans", "k-means"))
        for key in REPORT_KEYS
        if key in reports[name]
    }
    flat = finite_numbers({**flat, **ceilings})
    return record(
        context,
        mlflow,
        {
            "codebook_version": version,
            "buyers": data.height,
            "planted_types": planted is not None,
            **flat,
        },
        tags={"codebook_version": version},
        params={"codebook_version": version, "splits": config.splits},
        metrics={k.replace("_", ".", 1): v for k, v in flat.items()},
        artifacts=[(folder / f, "codebook_report") for f in ("report.json", "report.md")],
        metadata={"table": dg.MetadataValue.md(table)},
        rows=data.height,
        path=folder / "report.md",
    )


# ---- persona_assignments -------------------------------------------------------------------
class PersonaAssignmentsConfig(dg.Config):
    device: str = Field(default="cpu", description="Encoder device: 'cpu', 'cuda' or 'auto'.")
    batch_rows: int = Field(default=65_536, description="Buyers read and encoded per chunk.")


@dg.asset(
    group_name="personas",
    partitions_def=shop_partitions,
    deps=["buyer_vectors", persona_codebook],
    kinds={"pytorch", "parquet"},
    description=(
        "Persona token (VQ-VAE code) and k-means cluster of every buyer of a shop, from one "
        "streaming encoder pass over its buyer vectors; with stratum and bins."
    ),
)
def persona_assignments(
    context: dg.AssetExecutionContext,
    config: PersonaAssignmentsConfig,
    warehouse: WarehouseResource,
    artifacts: ArtifactsResource,
    mlflow: MLflowResource,
) -> dg.MaterializeResult:
    from simpersona.devices import resolve_device
    from simpersona.personas.assign import iter_assignment_frames
    from simpersona.personas.quality import codebook_usage

    shop = context.partition_key
    wh = warehouse.require(shop, "buyer_vectors")
    src = wh.partition_path("buyer_vectors", shop)
    version, model, km = load_codebook(artifacts)
    device = resolve_device(config.device)
    path = wh.partition_path("persona_assignments", shop)
    t0 = time.perf_counter()
    rows = atomic_write_parquet_chunks(
        (  # each row names its codebook, so stale partitions are caught downstream
            f.with_columns(pl.lit(version).alias("codebook_version"))
            for f in iter_assignment_frames(model, src, km, config.batch_rows, device=device)
        ),
        path,
    )
    seconds = time.perf_counter() - t0
    out = pl.read_parquet(path, columns=["token", "kmeans_cluster", "stratum", "distance"])
    usage = codebook_usage(out["token"].to_numpy(), model.config.codebook_size)
    figures = {
        "buyers": rows,
        "used_tokens": usage["used_codes"],
        "token_perplexity": round(usage["perplexity"], 3) if rows else 0.0,
        "used_kmeans_clusters": int(out["kmeans_cluster"].n_unique()) if rows else 0,
        "mean_distance": round(float(out["distance"].mean() or 0.0), 5),
        "seconds": round(seconds, 3),
        "buyers_per_s": round(rows / seconds, 1) if seconds > 0 else 0.0,
    }
    preview = pl.read_parquet(path, n_rows=8)
    return record(
        context,
        mlflow,
        figures,
        tags={"shop": shop, "codebook_version": version},
        params={"codebook_version": version, "device": str(device)},
        metadata={
            "codebook_version": version,
            "strata_mix": dg.MetadataValue.md(
                counts_to_markdown(_mix(out["stratum"]), "stratum", "share")
            ),
            "preview": dg.MetadataValue.md(frame_to_markdown(preview)),
        },
        rows=rows,
        path=path,
    )


# ---- store_token_distribution --------------------------------------------------------------
@dg.asset(
    group_name="personas",
    partitions_def=shop_partitions,
    deps=[persona_assignments],
    kinds={"polars", "parquet"},
    description="p̂_s(k): the share of a shop's buyers on each of the K persona tokens (Eq. 4).",
)
def store_token_distribution(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    artifacts: ArtifactsResource,
    mlflow: MLflowResource,
) -> dg.MaterializeResult:
    from simpersona.personas.distribution import token_distribution
    from simpersona.personas.quality import codebook_usage

    shop = context.partition_key
    wh = warehouse.require(shop, "persona_assignments")
    src = wh.partition_path("persona_assignments", shop)
    version, folder = artifacts.current(CODEBOOK)
    _check_assignments(wh, [shop], version)
    k = VQVAEConfig.load_json(folder / "vqvae" / "config.json").codebook_size
    tokens = pl.read_parquet(src, columns=["token"])["token"].to_numpy()
    dist = token_distribution(np.full(tokens.size, shop, dtype=object), tokens, k)
    path = atomic_write_parquet(dist, wh.partition_path("store_token_distribution", shop))
    usage = codebook_usage(tokens, k)
    top = dist.sort("share", descending=True).head(10)
    figures = {
        "buyers": int(tokens.size),
        "used_tokens": dist.height,
        "perplexity": round(usage["perplexity"], 3) if tokens.size else 0.0,
        "top_token_share": round(float(top["share"][0]), 4) if top.height else 0.0,
    }
    return record(
        context,
        mlflow,
        figures,
        tags={"shop": shop, "codebook_version": version},
        metadata={
            "codebook_version": version,
            "top_tokens": dg.MetadataValue.md(frame_to_markdown(top)),
        },
        rows=dist.height,
        path=path,
    )


# ---- distribution_recovery -----------------------------------------------------------------
class AcrossShopsConfig(dg.Config):
    """The shops a report across shops covers."""

    shops: list[str] = Field(
        default=[],
        description="Shops to include; [] = every shop with persona assignments (simpersona "
        "run passes its own, so shops of earlier runs are left out).",
    )


class DistributionRecoveryConfig(AcrossShopsConfig):
    resamples: int = Field(
        default=2000, description="Bootstrap resamples of the held-out stores (intervals)."
    )
    planted_types_path: str = Field(
        default=f"{DATA_DIR}/ground_truth/planted_types.parquet",
        description="Generator ground truth; when present, tokens and clusters of all buyers "
        "(stratum E included) are also compared with the planted types.",
    )


def _check_assignments(wh, shops: list[str], version: str) -> None:
    """Fail unless every shop's persona_assignments were made with codebook `version`."""
    stale = []
    for shop in shops:
        path = wh.partition_path("persona_assignments", shop)
        used = pl.scan_parquet(path).select(pl.col("codebook_version").unique()).collect()
        if used["codebook_version"].to_list() not in ([version], []):
            stale.append(shop)
    if stale:
        raise dg.Failure(
            f"persona_assignments of shops {stale} were made with another codebook than the "
            f"current {version}: re-materialize them"
        )


def _assigned(wh, artifacts: ArtifactsResource, wanted: list[str]) -> tuple[list[str], str, Path]:
    """(shops, codebook version, codebook folder) of a report across shops: `wanted` (each
    must have persona assignments), else every shop that has them, all assigned with the
    current codebook."""
    have = wh.shops_with("persona_assignments")
    missing = sorted(set(wanted) - set(have))
    if missing:
        raise dg.Failure(f"shops without persona_assignments: {missing}; materialize them first")
    shops = sorted(wanted) if wanted else have
    if not shops:
        raise dg.Failure("no persona_assignments partition is materialized")
    version, folder = artifacts.current(CODEBOOK)
    _check_assignments(wh, shops, version)
    return shops, version, folder


@dg.asset(
    group_name="personas",
    deps=[store_token_distribution, persona_assignments, "buyer_features"],
    kinds={"matplotlib", "mlflow"},
    description=(
        "App. B on held-out stores: each evaluation store's stratum mix (A–D; JS divergence) "
        "and feature means (R² across stores) recovered from its p̂_s, with P(stratum | k) "
        "and token centroids from the training stores only; bootstrap intervals over "
        "stores, stratum E on its own line, the in-sample figure as a labelled extra, the "
        "same for the k-means clusters, Fig. 6/7 plots."
    ),
)
def distribution_recovery(
    context: dg.AssetExecutionContext,
    config: DistributionRecoveryConfig,
    warehouse: WarehouseResource,
    artifacts: ArtifactsResource,
    buyer_hash: BuyerHashResource,
    mlflow: MLflowResource,
) -> dg.MaterializeResult:
    from simpersona.personas.distribution import raw_features_for
    from simpersona.personas.recovery import planted_figures, population_recovery
    from simpersona.personas.recovery_table import appendix_b_table

    wh = warehouse.warehouse()
    shops, version, folder = _assigned(wh, artifacts, config.shops)
    k = VQVAEConfig.load_json(folder / "vqvae" / "config.json").codebook_size
    cols = ["shop_id", "buyer_id", "token", "kmeans_cluster", "stratum"]
    assign = wh.read_shops("persona_assignments", shops, cols)
    feats = wh.read_shops("buyer_features", shops, ["shop_id", "buyer_id", *SCALAR_NAMES])
    out_dir = artifacts.path("distribution_recovery", version)
    rec = population_recovery(
        assign, raw_features_for(assign, feats), wh.shop_split()["train"], k, out_dir,
        config.resamples,
    )  # fmt: skip
    figures, stores, paths = rec.figures, rec.stores, rec.plots
    atomic_write_text(stores.write_csv(), out_dir / "store_js.csv")
    table = appendix_b_table(figures)
    atomic_write_text(table, out_dir / "appendix_b.md")
    planted = _planted_for(assign, config.planted_types_path, buyer_hash.hash_key())
    if planted is not None:  # codes vs planted types over every buyer, not just the sample
        figures |= planted_figures(assign, planted)
    # The evaluation report puts these beside the paper's App. B figures.
    atomic_write_text(json.dumps(figures, indent=2, sort_keys=True), out_dir / "figures.json")
    numbers = finite_numbers(figures)
    return record(
        context,
        mlflow,
        {**numbers, **({"recovery_note": rec.note} if rec.note else {})},
        tags={"codebook_version": version},
        params={"codebook_version": version, "shops": shops},
        metrics=numbers,
        artifacts=[(p, "distribution_recovery") for p in paths.values()]
        + [(out_dir / f, "distribution_recovery") for f in ("store_js.csv", "appendix_b.md")],
        metadata={
            "codebook_version": version,
            "appendix_b": dg.MetadataValue.md(table),
            "store_js": dg.MetadataValue.md(frame_to_markdown(stores, 50)),
            "plots": dg.MetadataValue.md(_png_markdown(paths)),
            **{f"{n}_png": dg.MetadataValue.path(str(p)) for n, p in paths.items()},
        },
        rows=stores.height,
        path=out_dir,
    )


# ---- persona_cards -------------------------------------------------------------------------
class PersonaCardsConfig(AcrossShopsConfig):
    top_n: int = Field(default=5, description="Categories and product titles per card.")


def _token_aggregates(wh, shops: list[str]) -> list:
    """Each shop's per-token aggregates for the cards, one shop in memory at a time."""
    from simpersona.personas.cards import token_aggregates

    parts = []
    for shop in shops:
        products = collections = None
        if wh.has_partition("products", shop):
            products = wh.read_partition("products", shop)
        if wh.has_partition("collections", shop):
            collections = wh.read_partition("collections", shop)
        parts.append(
            token_aggregates(
                wh.read_partition("persona_assignments", shop),
                wh.read_partition("buyer_features", shop),
                products,
                collections,
            )
        )
    return parts


@dg.asset(
    group_name="personas",
    deps=[persona_assignments, "buyer_features", dg.AssetKey("catalog")],
    kinds={"json", "html"},
    description=(
        "One card per used token: size, stratum profile, bins, raw-feature centroid, top "
        "categories and product titles, a one-line description; JSON, Markdown and HTML."
    ),
)
def persona_cards(
    context: dg.AssetExecutionContext,
    config: PersonaCardsConfig,
    warehouse: WarehouseResource,
    artifacts: ArtifactsResource,
    mlflow: MLflowResource,
) -> dg.MaterializeResult:
    from simpersona.personas import card_pages as pages
    from simpersona.personas import cards as pc

    wh = warehouse.warehouse()
    shops, version, _ = _assigned(wh, artifacts, config.shops)
    cards = pc.build_cards(pc.combine_aggregates(_token_aggregates(wh, shops)), config.top_n)
    meta = {"codebook_version": version, "shops": shops, "buyers": sum(c.buyers for c in cards)}
    # what to read first (docs/own-logs.md): the codebook's size warnings, the data's
    codebook_meta = json.loads((artifacts.path(CODEBOOK, version) / "meta.json").read_text())
    warnings = list(codebook_meta.get("warnings", []))
    warnings += [str(w) for w in warehouse_warnings(wh, shops)]
    for w in warnings:
        context.log.warning(w)
    staged = artifacts.staging_folder("persona_cards", version)
    pages.write_cards(cards, staged, {**meta, "warnings": warnings}, warnings=warnings)
    folder = artifacts.publish("persona_cards", version, staged)
    paths = {
        "json": folder / "cards.json",
        "md": folder / "cards.md",
        "html": folder / "cards.html",
    }
    figures = {
        "cards": len(cards),
        "buyers": meta["buyers"],
        "largest_card_share": cards[0].share if cards else 0.0,
        "cards_with_categories": sum(1 for c in cards if c.top_categories),
    }
    return record(
        context,
        mlflow,
        figures,
        tags={"codebook_version": version},
        artifacts=[(p, "persona_cards") for p in paths.values()],
        metadata={
            "codebook_version": version,
            "warnings": dg.MetadataValue.json(warnings),
            "preview": dg.MetadataValue.md(pages.cards_index_markdown(cards, max_rows=20)),
            "json": dg.MetadataValue.path(str(paths["json"])),
            "markdown": dg.MetadataValue.path(str(paths["md"])),
            "html": dg.MetadataValue.path(str(paths["html"])),
        },
        rows=len(cards),
    )


__all__ = [
    "codebook_report",
    "distribution_recovery",
    "persona_assignments",
    "persona_cards",
    "persona_codebook",
    "store_token_distribution",
]
