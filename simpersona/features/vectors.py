"""403-d buyer vectors (SPEC §2): 16 robust-z scalars, three 128-d product channels
(viewed, carted, purchased), three observation masks — plus strata and auxiliary labels."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

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
from simpersona.features.scalars import CHANNELS, SCALAR_NAMES
from simpersona.features.transform import (
    PCA_DIMS,
    VECTOR_DIM,
    ChannelPCA,
    FeatureTransform,
    pre_transform,
    robust_scale,
)

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
    counts = np.bincount(rows, minlength=n).astype(dtype)
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
    """Each product's channel transform, per channel: (n_products, 128)."""
    if emb.dim != transform.embedding_dim:
        raise ValueError(
            f"embeddings are {emb.dim}-d but the transform was fitted on {transform.embedding_dim}-d"
        )
    return {c: transform.channels[c].project(emb.matrix) for c in CHANNELS}


def _vector_matrix(
    features: pl.DataFrame,
    emb: ProductEmbeddings,
    transform: FeatureTransform,
    projections: Mapping[str, np.ndarray],
) -> np.ndarray:
    n = features.height
    out = np.empty((n, VECTOR_DIM), dtype=np.float32)
    out[:, SCALAR_SLICE] = transform.transform_scalars(raw_scalar_matrix(features))
    for i, c in enumerate(CHANNELS):
        # Channel transform of the mean embedding = mean of the products' transforms; an
        # unobserved buyer's row of the averaging matrix is empty, so its channel is zero.
        avg, observed = averaging_matrix(features[f"{c}_products"], emb, np.float64)
        out[:, CHANNEL_SLICES[c]] = avg @ projections[c]
        out[:, MASK_SLICE.start + i] = observed
    return out


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
        vec = _vector_matrix(part, emb, transform, projections)
        return (
            part.select("shop_id", "buyer_id", "stratum", "s_pur")
            .hstack(label_columns(part, transform))
            .with_columns(pl.Series("vector", vec, dtype=pl.Array(pl.Float32, VECTOR_DIM)))
        )

    starts = range(0, features.height, chunk_size)
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
