"""403-d buyer vectors (paper App. A): 16 robust-z scalars, three 128-d product channels
(viewed, carted, purchased), three observation masks — plus strata and auxiliary labels."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Final

import numpy as np
import polars as pl
import scipy.sparse as sp

from simpersona.features.labels import (
    engagement_score,
    exploration_score,
    purchase_score,
    tercile_edges,
    to_bins,
)
from simpersona.features.scalars import (
    CHANNELS,
    SCALAR_NAMES,
    ChannelItems,
    buyer_features,
    buyer_scalars_and_items,
    distinct_pairs,
)
from simpersona.features.transform import (
    PCA_DIMS,
    VECTOR_DIM,
    ChannelPCA,
    FeatureTransform,
    pre_transform,
    robust_scale,
)
from simpersona.lake import atomic_write_parquet_chunks

# Column layout of the vector, for readers.
SCALAR_SLICE = slice(0, len(SCALAR_NAMES))
CHANNEL_SLICES = {
    c: slice(len(SCALAR_NAMES) + i * PCA_DIMS, len(SCALAR_NAMES) + (i + 1) * PCA_DIMS)
    for i, c in enumerate(CHANNELS)
}
MASK_SLICE = slice(VECTOR_DIM - len(CHANNELS), VECTOR_DIM)


@dataclass(frozen=True)
class ProductEmbeddings:
    """One shop's product embeddings as a matrix with a product-id index."""

    index: dict[str, int]
    matrix: np.ndarray  # (n_products, D) float32

    @classmethod
    def from_frame(cls, df: pl.DataFrame) -> ProductEmbeddings:
        """From a frame with `product_id` and an `embedding` array/list column."""
        ids = df["product_id"].to_list()
        mat = np.asarray(df["embedding"].to_numpy(), dtype=np.float32)
        if mat.ndim != 2:
            mat = np.stack(df["embedding"].to_list()).astype(np.float32)
        return cls({p: i for i, p in enumerate(ids)}, mat)

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1])


def averaging_matrix(
    product_lists: pl.Series, emb: ProductEmbeddings, dtype: type = np.float32
) -> tuple[sp.csr_matrix, np.ndarray]:
    """(n, n_products) sparse matrix whose row i averages buyer i's products (one list per
    buyer) and the (n,) observed mask; products without an embedding are skipped, so a
    buyer none of whose products has one is unobserved (an all-zero row)."""
    n = len(product_lists)
    items = pl.DataFrame(
        {"row": np.arange(n, dtype=np.int64), "p": product_lists.cast(pl.List(pl.String))}
    ).explode("p", empty_as_null=False, keep_nulls=False)
    ids = list(emb.index)
    col = (
        items["p"]
        .cast(pl.Enum(ids) if ids else pl.Enum(["-"]), strict=False)
        .to_physical()
        .cast(pl.Int64)
        .fill_null(-1)
        .to_numpy()
    )
    lookup = np.fromiter(emb.index.values(), dtype=np.int64, count=len(ids))
    keep = col >= 0
    rows, cols = items["row"].to_numpy()[keep], lookup[col[keep]]
    counts: np.ndarray = np.bincount(rows, minlength=n).astype(dtype)
    observed = counts > 0
    weights = (1.0 / counts[rows]).astype(dtype)
    avg = sp.csr_matrix((weights, (rows, cols)), shape=(n, emb.matrix.shape[0]))
    return avg, observed


def channel_means(
    product_lists: pl.Series, emb: ProductEmbeddings
) -> tuple[np.ndarray, np.ndarray]:
    """Mean embedding of each buyer's products (one list per buyer), as a sparse averaging
    matrix times the embedding matrix. Returns (n, D) means and the (n,) observed mask;
    unobserved rows are zero. Products without an embedding are skipped."""
    avg, observed = averaging_matrix(product_lists, emb)
    return np.asarray(avg @ emb.matrix, dtype=np.float32), observed


def raw_scalar_matrix(features: pl.DataFrame) -> np.ndarray:
    return features.select(SCALAR_NAMES).to_numpy().astype(np.float64)


def fit_feature_transform(
    features: pl.DataFrame,
    embeddings: Mapping[str, ProductEmbeddings],
    embedding_model_id: str,
    seed: int = 0,
) -> FeatureTransform:
    """Fit robust-z stats, channel z + PCA and tercile edges on training buyers.

    `features`: buyer_features rows of the training set (any shops); `embeddings`: per shop.
    """
    if features.is_empty():
        raise ValueError("cannot fit the feature transform on an empty training set")
    center, scale = robust_scale(pre_transform(raw_scalar_matrix(features)))
    dims = {e.dim for e in embeddings.values()}
    if len(dims) != 1:
        raise ValueError(f"product embeddings of different sizes across shops: {sorted(dims)}")
    channels = {}
    for c in CHANNELS:
        parts = []
        for (shop,), part in features.group_by(["shop_id"], maintain_order=True):
            if shop not in embeddings:
                raise KeyError(f"no product embeddings for shop {shop!r}")
            means, observed = channel_means(part[f"{c}_products"], embeddings[shop])
            parts.append(means[observed])
        x = np.concatenate(parts) if parts else np.empty((0, dims.pop()))
        if x.shape[0] == 0:
            raise ValueError(f"no training buyer has a {c} product; cannot fit its PCA")
        channels[c] = ChannelPCA.fit(x, seed=seed)
    return FeatureTransform(
        scalar_center=center.astype(np.float64),
        scalar_scale=scale.astype(np.float64),
        channels=channels,
        engagement_edges=tercile_edges(engagement_score(features)),
        exploration_edges=tercile_edges(exploration_score(features)),
        embedding_model_id=embedding_model_id,
        embedding_dim=next(iter(embeddings.values())).dim,
        fitted_on={
            "shops": sorted(features["shop_id"].unique().to_list()),
            "buyers": features.height,
            "seed": seed,
        },
    )


def label_columns(features: pl.DataFrame, transform: FeatureTransform) -> pl.DataFrame:
    """Auxiliary bins (0 Low, 1 Medium, 2 High) with the transform's fitted edges."""
    return pl.DataFrame(
        {
            "engagement_bin": to_bins(engagement_score(features), transform.engagement_edges),
            "exploration_bin": to_bins(exploration_score(features), transform.exploration_edges),
            "purchase_bin": to_bins(purchase_score(features), transform.purchase_edges),
        }
    )


def vector_matrix(
    features: pl.DataFrame, emb: ProductEmbeddings, transform: FeatureTransform
) -> np.ndarray:
    """(n, 403) float32 buyer vectors of one shop's buyers."""
    return _vector_matrix(features, emb, transform, _projections(emb, transform))


def _projections(emb: ProductEmbeddings, transform: FeatureTransform) -> dict[str, np.ndarray]:
    """Each product's channel transform, per channel: (n_products, 128) float32.

    Computed in float64, then rounded once: the buyer averages run in float32 (sparse
    products about 3x faster, no float64 → float32 copy of every channel block), which adds
    a few float32 ulps (~1e-6 absolute on values of order 1-10) to vectors stored as float32
    anyway."""
    if emb.dim != transform.embedding_dim:
        raise ValueError(
            f"embeddings are {emb.dim}-d but the transform was fitted on {transform.embedding_dim}-d"
        )
    return {c: transform.channels[c].project(emb.matrix).astype(np.float32) for c in CHANNELS}


def _vector_matrix(
    features: pl.DataFrame,
    emb: ProductEmbeddings,
    transform: FeatureTransform,
    projections: Mapping[str, np.ndarray],
    averages: Mapping[str, tuple[sp.csr_matrix, np.ndarray]] | None = None,
) -> np.ndarray:
    """(n, 403) float32 vectors of `features`' rows. `averages`: each channel's averaging
    matrix and observed mask for exactly these rows (default: from the product lists)."""
    n = features.height
    out = np.empty((n, VECTOR_DIM), dtype=np.float32)
    out[:, SCALAR_SLICE] = transform.transform_scalars(raw_scalar_matrix(features))
    for i, c in enumerate(CHANNELS):
        # Channel transform of the mean embedding = mean of the products' transforms; an
        # unobserved buyer's row of the averaging matrix is empty, so its channel is zero.
        if averages is None:
            avg, observed = averaging_matrix(features[f"{c}_products"], emb, np.float32)
        else:
            avg, observed = averages[c]
        out[:, CHANNEL_SLICES[c]] = avg @ projections[c]
        out[:, MASK_SLICE.start + i] = observed
    return out


def _vector_frame(part: pl.DataFrame, vec: np.ndarray, transform: FeatureTransform) -> pl.DataFrame:
    """The rows of a `buyer_vectors` file: keys, stratum, s_pur, bins and the vector."""
    return (
        part.select("shop_id", "buyer_id", "stratum", "s_pur")
        .hstack(label_columns(part, transform))
        .with_columns(pl.Series("vector", vec, dtype=pl.Array(pl.Float32, VECTOR_DIM)))
    )


def _read_ahead(chunk: Callable[[int], pl.DataFrame], starts: range) -> Iterator[pl.DataFrame]:
    """chunk(start) for each start, the next one computed in a background thread while the
    caller consumes the current one (e.g. encodes it to Parquet): at most two alive."""
    if len(starts) <= 1:
        yield from map(chunk, starts)
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        ahead = pool.submit(chunk, starts[0])
        for start in starts[1:]:
            current = ahead.result()
            ahead = pool.submit(chunk, start)
            yield current
        yield ahead.result()


def iter_buyer_vectors(
    features: pl.DataFrame,
    emb: ProductEmbeddings,
    transform: FeatureTransform,
    chunk_size: int = 100_000,
) -> Iterator[pl.DataFrame]:
    """Buyer vectors in chunks (memory stays bounded on large shops): shop_id, buyer_id,
    stratum, the three bins, s_pur and `vector` (Array[Float32, 403]).

    The next chunk is computed in a background thread while the caller consumes the
    current one (e.g. encodes it to Parquet), so at most two chunks are alive."""
    projections = _projections(emb, transform)

    def chunk(start: int) -> pl.DataFrame:
        part = features.slice(start, chunk_size)
        return _vector_frame(part, _vector_matrix(part, emb, transform, projections), transform)

    yield from _read_ahead(chunk, range(0, features.height, chunk_size))


def iter_buyer_vectors_from_events(
    events: pl.LazyFrame | pl.DataFrame,
    products: pl.LazyFrame | pl.DataFrame | None,
    emb: ProductEmbeddings,
    transform: FeatureTransform,
    *,
    session_gap_minutes: int | None = None,
    chunk_size: int = 100_000,
) -> Iterator[pl.DataFrame]:
    """`iter_buyer_vectors(buyer_features(events, products, ...), emb, transform)` — the same
    chunks — without the product lists: the channel averages come straight from the
    (buyer, product) items, and no product id string is gathered per buyer.
    `session_gap_minutes`: as in `buyer_features` (sessionize the events without an id)."""
    fast = buyer_scalars_and_items(events, products, session_gap_minutes=session_gap_minutes)
    if fast is None:  # the reference path, e.g. null timestamps
        feats = buyer_features(events, products, session_gap_minutes=session_gap_minutes)
        yield from iter_buyer_vectors(feats, emb, transform, chunk_size)
        return
    yield from iter_buyer_vectors_from_items(*fast, emb, transform, chunk_size)


def iter_buyer_vectors_from_items(
    buyers: pl.DataFrame,
    items: ChannelItems,
    emb: ProductEmbeddings,
    transform: FeatureTransform,
    chunk_size: int = 100_000,
) -> Iterator[pl.DataFrame]:
    """The chunks of `iter_buyer_vectors` from `buyer_scalars_and_items`' output."""
    projections = _projections(emb, transform)
    averages = {c: items_averaging_matrix(items, c, emb) for c in CHANNELS}

    def chunk(start: int) -> pl.DataFrame:
        part = buyers.slice(start, chunk_size)
        stop = start + part.height
        rows = {c: (a[start:stop], o[start:stop]) for c, (a, o) in averages.items()}
        vec = _vector_matrix(part, emb, transform, projections, rows)
        return _vector_frame(part, vec, transform)

    yield from _read_ahead(chunk, range(0, buyers.height, chunk_size))


def items_averaging_matrix(
    items: ChannelItems, channel: str, emb: ProductEmbeddings
) -> tuple[sp.csr_matrix, np.ndarray]:
    """`averaging_matrix` of one channel's product lists, built from the items directly:
    (n_buyers, n_products) float32 rows averaging each buyer's distinct products that have
    an embedding, and the observed mask."""
    rank, code = items.items[channel]
    n, n_names = items.n_buyers, max(len(items.names), 1)
    # Embedding row of each product name (-1: no embedding), as `averaging_matrix` maps ids.
    ids = list(emb.index)
    pos = (
        items.names.cast(pl.Enum(ids) if ids else pl.Enum(["-"]), strict=False)
        .to_physical()
        .cast(pl.Int64)
        .fill_null(-1)
        .to_numpy()
    )
    lookup = np.append(np.fromiter(emb.index.values(), dtype=np.int64, count=len(ids)), -1)
    emb_row = lookup[pos]  # position -1 (no embedding) takes the appended -1
    # Distinct (buyer, product) pairs, sorted by buyer then product name: the order of the
    # sorted product lists, so the sums run in the same order as `averaging_matrix`'s.
    pairs = distinct_pairs(rank, code, n, n_names)
    col = emb_row[pairs % n_names]
    keep = col >= 0
    owner, col = pairs[keep] // n_names, col[keep]
    counts = np.bincount(owner, minlength=n)
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    weights = 1.0 / counts[owner].astype(np.float32)  # as `averaging_matrix` in float32
    avg = sp.csr_matrix((weights, col, indptr), shape=(n, emb.matrix.shape[0]))
    return avg, counts > 0


# Parquet options of a `buyer_vectors` file. The vector column is the bulk (403 float32 per
# buyer, ~2/3 of them zeros for buyers without a cart or order) and nearly all the encoding
# time: no dictionary (float values rarely repeat, so the dictionary attempt is wasted work),
# no min/max statistics (nobody filters on vector elements), Snappy (half the size of
# uncompressed at about the same speed; zstd is ~1/3 smaller again but ~40 % slower to write).
# The dtype stays Array[Float32, 403]: readers (`iter_parquet_vectors`, the assets) see
# exactly the pipeline's values.
VECTOR_PARQUET_OPTIONS: Final[dict] = {
    "compression": "snappy",
    "use_dictionary": ["shop_id", "stratum"],
    "write_statistics": ["shop_id", "buyer_id", "stratum", "s_pur"],
}


def write_buyer_vectors(chunks: Iterable[pl.DataFrame], path: str | os.PathLike[str]) -> int:
    """Stream `iter_buyer_vectors` chunks into one Parquet file, atomically, with
    `VECTOR_PARQUET_OPTIONS`; returns the rows written. Memory stays at one chunk, however
    large the shop."""
    return atomic_write_parquet_chunks(chunks, path, **VECTOR_PARQUET_OPTIONS)


def buyer_vectors(
    features: pl.DataFrame, emb: ProductEmbeddings, transform: FeatureTransform
) -> pl.DataFrame:
    parts = list(iter_buyer_vectors(features, emb, transform))
    if not parts:
        return pl.DataFrame(
            schema={
                "shop_id": pl.String,
                "buyer_id": pl.String,
                "stratum": pl.String,
                "s_pur": pl.Int64,
                "engagement_bin": pl.Int8,
                "exploration_bin": pl.Int8,
                "purchase_bin": pl.Int8,
                "vector": pl.Array(pl.Float32, VECTOR_DIM),
            }
        )
    return pl.concat(parts)
