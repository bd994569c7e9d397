"""Planted-type recovery on generated data (docs/personas.md): do VQ-VAE codes recover the
generator's planted buyer types better than k-means, and is the codebook behaviourally more
coherent (paper Table 1)?

    result = run_planted_recovery(n_shops=16, n_buyers=80_000, seed=0)
    print(result.table())          # Table 1 on the train split, ARI on the non-E buyers
    result.line()                  # "buyers=… train=… ari_vqvae=… ari_kmeans=… …"

One run: generate the default (Puffy-calibrated) population, compute buyer features and
403-d vectors with the pipeline's functions (titles embedded with the packaged MiniLM), draw
the paper §3.1 training sample, train the VQ-VAE (`VQVAEConfig()`, or the config given) and the
MiniBatch k-means baseline on its train split, assign every buyer. Two populations:

* **Table 1** (`reports`): the train split, as the paper computes Table 1 on its training set
  and as the `codebook_report` asset does.
* **Planted types** (`ari`): majority-mapped ARI (`quality.planted_agreement`) over the buyers
  of every shop outside stratum E. E buyers have no browsing at all (one landing page), so
  their vectors carry no product or funnel signal and are outside the codebook's training
  domain (paper §3.1 drops E); `ari["*_all"]` includes them.

`benchmarks/planted_recovery.py` and `tests/test_planted_recovery.py` both call this.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

TABLE_NAMES = ("k-means", "VQ-VAE")


@dataclass
class PlantedRecovery:
    buyers: int  # all generated buyers
    train: int  # rows of the train split (VQ-VAE and k-means are fitted on them)
    non_e: int  # buyers outside stratum E (the ARI population)
    reports: dict[str, dict[str, Any]]  # Table 1 on the train split: "k-means", "VQ-VAE"
    ari: dict[str, float]  # "vqvae", "kmeans" (non-E buyers), "vqvae_all", "kmeans_all"
    confusions: list[tuple[str, str, int]]  # VQ-VAE: (planted, mapped type, buyers), largest first
    build_seconds: float
    training_seconds: float  # VQ-VAE, k-means++ init included
    kmeans_seconds: float
    training_steps: int
    # 403-d Calinski–Harabasz of the tightest codebooks that never mix strata
    # ("ch_pure_strata"), or strata and auxiliary bins ("ch_pure_strata_bins"), on the train
    # split: what purity costs on the geometric figure (`quality.purity_ceilings`)
    ch_ceilings: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        v, k = self.reports["VQ-VAE"], self.reports["k-means"]
        pure = self.ch_ceilings
        return (
            f"buyers={self.buyers} train={self.train} ari_vqvae={self.ari['vqvae']:.3f} "
            f"ari_kmeans={self.ari['kmeans']:.3f} ari_vqvae_all={self.ari['vqvae_all']:.3f} "
            f"ari_kmeans_all={self.ari['kmeans_all']:.3f} "
            f"purity={v['stratum_purity_pct']:.2f}/{k['stratum_purity_pct']:.2f} "
            f"incoherence_max={incoherence_max(v):.2f}/{incoherence_max(k):.2f} "
            f"ch={v['calinski_harabasz']:.1f}/{k['calinski_harabasz']:.1f} "
            f"ch_behaviour={v['calinski_harabasz_behaviour']:.1f}/"
            f"{k['calinski_harabasz_behaviour']:.1f} "
            f"ch_pure={pure['ch_pure_strata']:.1f}/{pure['ch_pure_strata_bins']:.1f} "
            f"perplexity={v['perplexity']:.1f} dead_codes={v['dead_codes']} "
            f"train_s={self.training_seconds:.1f} steps={self.training_steps}"
        )

    def table(self) -> str:
        """Table 1 side by side (Markdown, with the paper's columns) and the ARI figures."""
        from simpersona.personas.quality import purity_ceilings_line
        from simpersona.personas.quality_table import side_by_side

        top = ", ".join(f"{a} → {b} {n:,}" for a, b, n in self.confusions[:4])
        return (
            f"Table 1 on the train split ({self.train:,} buyers):\n\n"
            + side_by_side({n: self.reports[n] for n in TABLE_NAMES})
            + f"\nMajority-mapped ARI vs planted types, {self.non_e:,} non-E buyers of all shops: "
            f"VQ-VAE {self.ari['vqvae']:.3f}, k-means {self.ari['kmeans']:.3f} "
            f"(all {self.buyers:,} buyers: {self.ari['vqvae_all']:.3f}, "
            f"{self.ari['kmeans_all']:.3f}).\nLargest VQ-VAE confusions: {top}.\n"
            f"{purity_ceilings_line(self.ch_ceilings)} (k-means "
            f"{self.reports['k-means']['calinski_harabasz']:.1f}, VQ-VAE "
            f"{self.reports['VQ-VAE']['calinski_harabasz']:.1f}).\n"
        )


def incoherence_max(report: dict[str, Any], any_: bool = False) -> float:
    """The largest of the three heads' incoherent-buyer shares (%)."""
    key = "incoherent_any_{}_pct" if any_ else "incoherent_{}_pct"
    return max(report[key.format(h)] for h in ("engagement", "exploration", "purchase"))


def planted_vectors(
    root: Path, n_shops: int = 16, n_buyers: int = 80_000, seed: int = 0, generator: Any = None
) -> pl.DataFrame:
    """Buyer vectors of a generated population (lake and ground truth written under `root`),
    with `planted_type` and the training-sample `split` ('train' / 'val' / null). `generator`
    (a GeneratorConfig) replaces n_shops / n_buyers / seed."""
    from simpersona.embeddings import load_embedder
    from simpersona.features.sample import SampleConfig, sample_training_pairs, split_shops
    from simpersona.features.scalars import buyer_features
    from simpersona.features.vectors import ProductEmbeddings, buyer_vectors, fit_feature_transform
    from simpersona.ingest.sessionize import sessionize
    from simpersona.synth import GeneratorConfig, generate_lake

    cfg = generator or GeneratorConfig(n_shops=n_shops, n_buyers=n_buyers, seed=seed)
    generate_lake(root / "lake", cfg, ground_truth_path=root / "gt.parquet", progress=False)
    events = sessionize(pl.read_parquet(root / "lake" / "events" / "**" / "*.parquet"))
    products = pl.read_parquet(root / "lake" / "products" / "**" / "*.parquet")
    feats = buyer_features(events, products)
    matrix = np.asarray(load_embedder().encode(products["title"].to_list()), dtype=np.float32)
    emb = {}
    for (shop,), part in products.with_row_index("i").group_by(["shop_id"]):
        ids = {p: k for k, p in enumerate(part["product_id"])}
        emb[shop] = ProductEmbeddings(ids, matrix[part["i"].to_numpy()])
    scfg = SampleConfig(seed=cfg.seed)
    sample = sample_training_pairs(feats, split_shops(sorted(emb), scfg).train, scfg)
    keys = ["shop_id", "buyer_id"]
    transform = fit_feature_transform(feats.join(sample.select(keys), on=keys), emb, "minilm")
    vectors = pl.concat(
        buyer_vectors(part, emb[shop], transform)
        for (shop,), part in feats.group_by(["shop_id"], maintain_order=True)
    )
    truth = pl.read_parquet(root / "gt.parquet").select(*keys, "planted_type")
    return vectors.join(truth, on=keys, how="left").join(
        sample.select(*keys, "split"), on=keys, how="left"
    )


def confusions(codes: np.ndarray, planted: np.ndarray) -> list[tuple[str, str, int]]:
    """(planted type, the type its code maps to by majority, buyers) for every mismatch pair,
    largest first."""
    from simpersona.personas.quality import majority_map

    mapped = majority_map(codes, planted)
    frame = pl.DataFrame({"t": planted.astype(str), "m": mapped.astype(str)})
    wrong = frame.filter(pl.col("t") != pl.col("m")).group_by("t", "m").len()
    return [tuple(r) for r in wrong.sort("len", descending=True).iter_rows()]


def run_planted_recovery(
    n_shops: int = 16,
    n_buyers: int = 80_000,
    seed: int = 0,
    config: Any = None,
    generator: Any = None,
    workdir: str | Path | None = None,
) -> PlantedRecovery:
    """The whole experiment; `config` a VQVAEConfig (default: `VQVAEConfig()` with `seed`;
    `VQVAEConfig.paper(seed=seed)` for the paper preset). Generated files go to a temporary
    folder (or `workdir`)."""
    from simpersona.personas import VQVAEConfig, assign_tokens, gate1_signatures, train_vqvae
    from simpersona.personas.kmeans_baseline import fit_kmeans
    from simpersona.personas.quality import (
        bins_matrix,
        codebook_report,
        planted_agreement,
        purity_ceilings,
        vector_matrix,
    )

    t0 = time.perf_counter()
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="planted-") as tmp:
            v = planted_vectors(Path(tmp), n_shops, n_buyers, seed, generator)
    else:
        v = planted_vectors(Path(workdir), n_shops, n_buyers, seed, generator)
    build_seconds = time.perf_counter() - t0
    x, bins = vector_matrix(v["vector"]), bins_matrix(v)
    train = (v["split"] == "train").fill_null(False).to_numpy()
    strata = v["stratum"].to_numpy().astype(str)
    cfg = config or VQVAEConfig(seed=seed)
    sig = gate1_signatures(cfg, strata[train])  # the paper's count-based gate 1, via the strata
    result = train_vqvae(x[train], bins[train], config=cfg, signatures=sig, progress=False)
    t1 = time.perf_counter()
    km = fit_kmeans(x[train], k=cfg.codebook_size, seed=cfg.seed)
    kmeans_seconds = time.perf_counter() - t1
    codes = {
        "VQ-VAE": np.asarray(assign_tokens(result.model, x)).reshape(-1),
        "k-means": km.assign(x),
    }
    types = v["planted_type"].to_numpy()
    non_e = strata != "E"
    reports, ari = {}, {}
    for name in TABLE_NAMES:
        c = codes[name]
        reports[name] = codebook_report(
            name, c[train], strata[train], bins[train], x[train], k=cfg.codebook_size
        )
        key = "vqvae" if name == "VQ-VAE" else "kmeans"
        ari[key] = planted_agreement(c[non_e], types[non_e])["majority_ari"]
        ari[f"{key}_all"] = planted_agreement(c, types)["majority_ari"]
    ch_ceilings = purity_ceilings(x[train], strata[train], bins[train], cfg.codebook_size, cfg.seed)
    return PlantedRecovery(
        buyers=v.height,
        train=int(train.sum()),
        non_e=int(non_e.sum()),
        reports=reports,
        ari=ari,
        confusions=confusions(codes["VQ-VAE"][non_e], types[non_e]),
        build_seconds=build_seconds,
        training_seconds=result.seconds,
        kmeans_seconds=kmeans_seconds,
        training_steps=int(result.history[-1]["step"]) if result.history else 0,
        ch_ceilings=ch_ceilings,
        extra={"kmeans_note": km.note, "epochs": len(result.history)},
    )
