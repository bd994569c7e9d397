"""Product titles -> embeddings: one vector per product row (paper App. A), the distinct
normalised titles looked up in the cache and only the misses embedded.

    result = embed_products(warehouse.read_partition("products", shop), embedder, cache)
    result.embeddings  # shop_id, product_id, title_hash, embedding: Array(Float32, dim)
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from simpersona.embeddings.cache import EmbeddingCache, embedding_series, frame_vectors
from simpersona.embeddings.keys import CacheKey, normalize_text
from simpersona.embeddings.model import Embedder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbedResult:
    """`embeddings`: one row per input product (input order): shop_id, product_id, title_hash,
    embedding (Array(Float32, dim)). `computed` + `cached` = distinct titles in the input."""

    embeddings: pl.DataFrame
    computed: int  # distinct titles embedded by this call
    cached: int  # distinct titles found in the cache
    seconds: float
    model_id: str = ""
    dim: int = 0
    encode_seconds: float = 0.0

    @property
    def unique_titles(self) -> int:
        return self.computed + self.cached


def embeddings_schema(dim: int) -> dict[str, pl.DataType]:
    return {
        "shop_id": pl.String(),
        "product_id": pl.String(),
        "title_hash": pl.String(),
        "embedding": pl.Array(pl.Float32, dim),
    }


def _describe_bad_titles(bad: list[tuple[Any, Any]]) -> str:
    shown = ", ".join(f"shop_id={s!r} product_id={p!r}" for s, p in bad[:5])
    more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
    return f"{len(bad)} product(s) have an empty or missing title: {shown}{more}"


def embed_products(
    products: pl.DataFrame,
    embedder: Embedder,
    cache: EmbeddingCache,
    progress: bool = True,
) -> EmbedResult:
    """One title embedding per product row. Titles are normalised (`normalize_text`) and
    hashed; each distinct text is looked up in `cache` and only the misses are embedded (once,
    however many products or shops share the text), then stored. An empty or missing title
    raises ValueError naming the shop and product."""
    t0 = time.perf_counter()
    missing = [c for c in ("shop_id", "product_id", "title") if c not in products.columns]
    if missing:
        raise ValueError(f"products frame lacks column(s) {missing}")
    model_id = embedder.model_id

    raw_titles = products["title"].to_list()
    memo: dict[Any, tuple[str, str]] = {}
    row_hashes: list[str] = []
    bad: list[tuple[Any, Any]] = []
    for i, raw in enumerate(raw_titles):
        hit = memo.get(raw)
        if hit is None:
            norm = normalize_text(raw)
            hit = (norm, hashlib.sha256(norm.encode("utf-8")).hexdigest())
            memo[raw] = hit
        if not hit[0]:
            bad.append((products["shop_id"][i], products["product_id"][i]))
        row_hashes.append(hit[1])
    if bad:
        raise ValueError(_describe_bad_titles(bad))

    texts_by_hash = {h: t for t, h in memo.values()}
    unique_hashes = list(texts_by_hash)
    position = {h: i for i, h in enumerate(unique_hashes)}

    found = cache.lookup(model_id, unique_hashes) if unique_hashes else pl.DataFrame()
    n_found = found.height
    stored = found.schema.get("embedding")
    dim = stored.size if n_found and isinstance(stored, pl.Array) else int(embedder.dim)
    matrix = np.empty((len(unique_hashes), dim), dtype=np.float32)
    is_found = np.zeros(len(unique_hashes), dtype=bool)
    if n_found:
        idx = np.fromiter((position[h] for h in found["text_hash"]), dtype=np.int64, count=n_found)
        matrix[idx] = frame_vectors(found, dim)
        is_found[idx] = True

    miss = np.flatnonzero(~is_found)
    encode_seconds = 0.0
    if len(miss):
        miss_hashes = [unique_hashes[i] for i in miss]
        miss_texts = [texts_by_hash[h] for h in miss_hashes]
        t_enc = time.perf_counter()
        vecs = np.asarray(embedder.encode(miss_texts, progress=progress), dtype=np.float32)
        encode_seconds = time.perf_counter() - t_enc
        if vecs.shape != (len(miss), dim):
            raise ValueError(
                f"embedder {model_id!r} returned shape {vecs.shape}, expected {(len(miss), dim)}"
            )
        matrix[miss] = vecs
        cache.put([CacheKey(model_id, h) for h in miss_hashes], vecs, miss_texts)

    rows = np.fromiter((position[h] for h in row_hashes), dtype=np.int64, count=len(row_hashes))
    frame = pl.DataFrame(
        {
            "shop_id": products["shop_id"].cast(pl.String),
            "product_id": products["product_id"].cast(pl.String),
            "title_hash": pl.Series(row_hashes, dtype=pl.String),
            "embedding": embedding_series(matrix[rows], dim),
        },
        schema=embeddings_schema(dim),
    )
    seconds = time.perf_counter() - t0
    log.info(
        "embedded %d products (%d distinct titles: %d computed, %d cached) in %.2f s",
        frame.height,
        len(unique_hashes),
        len(miss),
        n_found,
        seconds,
    )
    return EmbedResult(
        embeddings=frame,
        computed=len(miss),
        cached=n_found,
        seconds=seconds,
        model_id=model_id,
        dim=dim,
        encode_seconds=encode_seconds,
    )
