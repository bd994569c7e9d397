"""How well do persona codes recover the generator's planted buyer types? (issue 4 acceptance)

    python benchmarks/planted_recovery.py --quick   # 4 shops, 40 K buyers, < 1 min idle
    python benchmarks/planted_recovery.py           # 16 shops, 80 K buyers (~8 training shops)

Generates the default (Puffy-calibrated) population, computes buyer features and 403-d
vectors with the pipeline's functions (titles embedded with the packaged MiniLM), draws the
SPEC §5 training sample, trains the VQ-VAE (paper defaults) and the k-means baseline on its
train split, assigns every buyer, and scores codes against the planted types with
`quality.planted_agreement` (ARI after mapping each code to its majority type). Buyers of
stratum E are left out of the headline figure: they have no browsing at all, so their
vectors carry no product or funnel signal and are not in the codebook's training domain.

Last line: `buyers=… train=… ari_vqvae=… ari_kmeans=… ari_vqvae_all=… ari_kmeans_all=…`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from simpersona.embeddings import load_embedder  # noqa: E402
from simpersona.features.sample import SampleConfig, sample_training_pairs, split_shops  # noqa: E402
from simpersona.features.scalars import buyer_features  # noqa: E402
from simpersona.features.vectors import (  # noqa: E402
    ProductEmbeddings,
    buyer_vectors,
    fit_feature_transform,
)
from simpersona.ingest.sessionize import sessionize  # noqa: E402
from simpersona.personas import VQVAEConfig, assign_tokens, train_vqvae  # noqa: E402
from simpersona.personas.kmeans_baseline import fit_kmeans  # noqa: E402
from simpersona.personas.quality import bins_matrix, planted_agreement, vector_matrix  # noqa: E402
from simpersona.synth import GeneratorConfig, generate_lake  # noqa: E402


def build_vectors(root: Path, n_shops: int, n_buyers: int, seed: int) -> pl.DataFrame:
    """Buyer vectors of a generated population with planted type and training split."""
    generate_lake(
        root / "lake",
        GeneratorConfig(n_shops=n_shops, n_buyers=n_buyers, seed=seed),
        ground_truth_path=root / "gt.parquet",
        progress=False,
    )
    events = sessionize(pl.read_parquet(root / "lake" / "events" / "**" / "*.parquet"))
    products = pl.read_parquet(root / "lake" / "products" / "**" / "*.parquet")
    feats = buyer_features(events, products)
    matrix = np.asarray(load_embedder().encode(products["title"].to_list()), dtype=np.float32)
    emb = {}
    for (shop,), part in products.with_row_index("i").group_by(["shop_id"]):
        ids = {p: k for k, p in enumerate(part["product_id"])}
        emb[shop] = ProductEmbeddings(ids, matrix[part["i"].to_numpy()])
    cfg = SampleConfig(seed=seed)
    sample = sample_training_pairs(feats, split_shops(sorted(emb), cfg).train, cfg)
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="4 shops, 40 K buyers")
    ap.add_argument("--shops", type=int, default=16)
    ap.add_argument("--buyers", type=int, default=80_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    shops, buyers = (4, 40_000) if args.quick else (args.shops, args.buyers)

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="planted-") as tmp:
        v = build_vectors(Path(tmp), shops, buyers, args.seed)
    x, bins = vector_matrix(v["vector"]), bins_matrix(v)
    train = (v["split"] == "train").fill_null(False).to_numpy()
    print(
        f"{v.height:,} buyers, {int(train.sum()):,} in the train split ({time.perf_counter() - t0:.1f} s)"
    )

    t1 = time.perf_counter()
    model = train_vqvae(
        x[train], bins[train], config=VQVAEConfig(seed=args.seed), progress=False
    ).model
    codes = {
        "vqvae": np.asarray(assign_tokens(model, x)).reshape(-1),
        "kmeans": fit_kmeans(x[train], k=256, seed=args.seed).assign(x),
    }
    print(f"trained and assigned in {time.perf_counter() - t1:.1f} s")

    types = v["planted_type"].to_numpy()
    non_e = (v["stratum"] != "E").to_numpy()
    ari = {}
    for name, c in codes.items():
        ari[name] = planted_agreement(c[non_e], types[non_e])["majority_ari"]
        ari[f"{name}_all"] = planted_agreement(c, types)["majority_ari"]
        print(f"{name:7s} majority-mapped ARI: non-E {ari[name]:.3f}, all {ari[f'{name}_all']:.3f}")
    print(
        f"buyers={v.height} train={int(train.sum())} ari_vqvae={ari['vqvae']:.3f} "
        f"ari_kmeans={ari['kmeans']:.3f} ari_vqvae_all={ari['vqvae_all']:.3f} "
        f"ari_kmeans_all={ari['kmeans_all']:.3f}"
    )


if __name__ == "__main__":
    main()
