"""Auxiliary Low/Medium/High labels (paper App. E) and their class weights."""

from __future__ import annotations

from typing import Final

import numpy as np
import polars as pl

PURCHASE_EDGES: Final[tuple[float, float]] = (1.5, 4.5)  # s_pur: 0 → Low, 3 → Medium, ≥ 6 → High
BIN_NAMES: Final[tuple[str, str, str]] = ("Low", "Medium", "High")
HEADS: Final[tuple[str, ...]] = ("engagement", "exploration", "purchase")


def engagement_score(df: pl.DataFrame) -> np.ndarray:
    """log(1 + total session duration in seconds); log1p so zero-duration buyers are defined."""
    return np.log1p(df["total_duration_s"].to_numpy().astype(np.float64))


def exploration_score(df: pl.DataFrame) -> np.ndarray:
    """log(1 + search + collection-view + product-view sessions)."""
    return np.log1p(df["exploration_sessions"].to_numpy().astype(np.float64))


def purchase_score(df: pl.DataFrame) -> np.ndarray:
    """s_pur = 8·checkout_sessions + 3·atc_sessions."""
    return df["s_pur"].to_numpy().astype(np.float64)


def tercile_edges(scores: np.ndarray) -> tuple[float, float]:
    """Percentile terciles of `scores` (the 33.3rd and 66.7th percentiles)."""
    if scores.size == 0:
        raise ValueError("cannot fit tercile edges on an empty set")
    q1, q2 = np.quantile(scores, [1 / 3, 2 / 3])
    return float(q1), float(q2)


def to_bins(scores: np.ndarray, edges: tuple[float, float]) -> np.ndarray:
    """0/1/2 for (-inf, e1], (e1, e2], (e2, inf): a score equal to an edge takes the lower bin,
    so ties at a tercile edge (e.g. the many zero-duration buyers) stay together."""
    return np.searchsorted(np.asarray(edges, dtype=np.float64), scores, side="left").astype(np.int8)


def class_weights(bins: np.ndarray, n_classes: int = 3) -> np.ndarray:
    """Inverse-frequency weights w_i = N / (B · n_i); 0 for a class absent from `bins`."""
    counts = np.bincount(bins.astype(np.int64), minlength=n_classes).astype(np.float64)
    with np.errstate(divide="ignore"):
        w = np.where(counts > 0, bins.size / (n_classes * counts), 0.0)
    return w
