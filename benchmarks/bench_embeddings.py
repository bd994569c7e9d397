"""Benchmark of product-title embedding with the persistent cache (simpersona/embeddings/).

    python benchmarks/bench_embeddings.py --quick   # 300 titles, < 1 min with the model loaded
    python benchmarks/bench_embeddings.py           # 5,000 titles

Titles are composed synthetically here (brand, adjective, colour, material, product, variant),
all distinct, spread over a few shops. Runs, in one process, on a fresh cache folder:

    cold         every title is embedded and written to the cache
    warm         a new cache object on the same folder: every title is a disk hit
    incremental  5 % of the titles changed (a nightly run): only those are embedded
    compacted    after compact(): warm again from one merged file

Model load time is reported apart and not counted in any rate. titles/s = distinct titles /
seconds of `embed_products`. The last line is exactly
`titles=… cold_per_s=… warm_per_s=… ratio=…` (ratio = warm / cold).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from simpersona.embeddings import (  # noqa: E402
    EmbeddingCache,
    EmbeddingConfig,
    embed_products,
    load_embedder,
)

BRANDS = ["Northpeak", "Lumen", "Oakridge", "Velo", "Kinfolk", "Arcadia", "Brisa", "Tundra"]
ADJECTIVES = [
    "Classic", "Premium", "Ultralight", "Organic", "Vintage", "Waterproof", "Slim-fit",
    "Handmade", "Recycled", "Deluxe", "Everyday", "Insulated",
]  # fmt: skip
COLOURS = [
    "black", "navy", "red", "sage green", "ivory", "charcoal", "mustard", "blush pink",
    "olive", "sky blue",
]  # fmt: skip
MATERIALS = [
    "cotton", "leather", "merino wool", "stainless steel", "bamboo", "linen", "ceramic",
    "recycled nylon", "oak", "silicone",
]  # fmt: skip
PRODUCTS = [
    "running shoe", "trail sneaker", "hoodie", "coffee grinder", "yoga mat", "backpack",
    "water bottle", "desk lamp", "t-shirt", "scarf", "wallet", "throw pillow", "beanie",
    "french press", "rain jacket", "duvet cover", "phone case", "sunglasses", "tote bag",
    "chef's knife",
]  # fmt: skip
VARIANTS = ["", "S", "M", "L", "XL", "500 ml", "1 L", "pack of 3", "set of 2", "kids"]


def make_titles(n: int, seed: int = 0) -> list[str]:
    """n distinct composed titles (up to ~2.3 M combinations)."""
    rng = random.Random(seed)
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < n:
        variant = rng.choice(VARIANTS)
        title = (
            f"{rng.choice(BRANDS)} {rng.choice(ADJECTIVES)} {rng.choice(COLOURS)} "
            f"{rng.choice(MATERIALS)} {rng.choice(PRODUCTS)}" + (f" - {variant}" if variant else "")
        )
        if title not in seen:
            seen.add(title)
            out.append(title)
    return out


def products_frame(titles: list[str], shops: int = 5) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "shop_id": [f"shop-{i % shops}" for i in range(len(titles))],
            "product_id": [f"p{i}" for i in range(len(titles))],
            "title": titles,
        }
    )


def timed(label: str, df: pl.DataFrame, embedder, cache: EmbeddingCache, n_titles: int):
    res = embed_products(df, embedder, cache, progress=False)
    rate = n_titles / res.seconds
    print(
        f"{label:<12} titles={n_titles:>6} computed={res.computed:>6} cached={res.cached:>6} "
        f"seconds={res.seconds:8.3f} titles/s={rate:>10,.0f}",
        flush=True,
    )
    return res, rate


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="300 titles instead of 5,000")
    ap.add_argument("--titles", type=int, default=None, help="number of distinct titles")
    ap.add_argument("--model", default=EmbeddingConfig.model, help="model name or local dir")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=EmbeddingConfig.batch_size)
    ap.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's)"
    )
    ap.add_argument("--cache-dir", default=None, help="keep the cache here (default: temp dir)")
    args = ap.parse_args()
    n = args.titles or (300 if args.quick else 5000)

    config = EmbeddingConfig(
        model=args.model, device=args.device, batch_size=args.batch_size, num_threads=args.threads
    )
    t0 = time.perf_counter()
    embedder = load_embedder(config)
    import torch

    print(
        f"cpus={os.cpu_count()} torch_threads={torch.get_num_threads()} "
        f"load_avg_1m={os.getloadavg()[0]:.2f} device={embedder.device} "
        f"batch_size={args.batch_size}",
        flush=True,
    )
    print(
        f"model        {embedder.model_id} dim={embedder.dim} load_s={time.perf_counter() - t0:.1f}"
    )
    embedder.encode(["warm-up title one", "warm-up title two"])  # first-call overheads

    titles = make_titles(n)
    df = products_frame(titles)
    root = Path(args.cache_dir) if args.cache_dir else Path(tempfile.mkdtemp(prefix="embcache-"))
    if args.cache_dir:
        shutil.rmtree(root, ignore_errors=True)
    try:
        cold, cold_rate = timed("cold", df, embedder, EmbeddingCache(root), n)
        warm, warm_rate = timed("warm", df, embedder, EmbeddingCache(root), n)
        assert warm.computed == 0, "warm run recomputed titles"
        same = cold.embeddings.equals(warm.embeddings)

        changed = list(titles)
        k = max(1, n // 20)
        for i in range(0, n, n // k):
            changed[i] = changed[i] + " (new edition)"
        inc, _ = timed("incremental", products_frame(changed), embedder, EmbeddingCache(root), n)

        cache = EmbeddingCache(root)
        t_c = time.perf_counter()
        cache.compact()
        compact_s = time.perf_counter() - t_c
        _, compacted_rate = timed("compacted", df, embedder, EmbeddingCache(root), n)
        st = cache.stats()
        print(
            f"cache        entries={st.entries} shards={st.shards} "
            f"mb={st.bytes / 2**20:.1f} compact_s={compact_s:.2f} warm_equals_cold={same} "
            f"incremental_computed={inc.computed}",
            flush=True,
        )
        vecs = warm.embeddings["embedding"].to_numpy()
        assert np.isfinite(vecs).all()
    finally:
        if not args.cache_dir:
            shutil.rmtree(root, ignore_errors=True)
    print(
        f"titles={n} cold_per_s={cold_rate:.1f} warm_per_s={warm_rate:.1f} "
        f"ratio={warm_rate / cold_rate:.1f}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
