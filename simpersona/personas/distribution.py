"""Per-store token distributions and population recovery (paper App. B).

Every buyer has a token (code). For store s, p̂_s(k) is the share of its buyers on token k
(Eq. 4). Two tests ask whether the token mix of a store carries its population structure:

* stratum recovery (Eq. 5): P̂_s(stratum) = Σ_k p̂_s(k)·P(stratum | k), with P(stratum | k)
  estimated on a reference set of buyers, compared with the store's real stratum mix by the
  Jensen–Shannon divergence (base 2, so it lies in [0, 1]); paper: mean 0.054, median 0.045,
  36 of 42 stores below 0.10;
* feature recovery (Eq. 6): x̂_s = Σ_k p̂_s(k)·x̄_k, with x̄_k the token centroid of the raw
  (untransformed) behavioural scalars, compared with the store's real means by R² across
  stores per feature; paper: intent strength 0.96, ATC rate 0.95, checkout rate 0.90,
  browse-only rate 0.87.

This module computes; rendering lives beside it: the plots in recovery_plots.py
(matplotlib's object API, `Figure` + Agg canvas, never pyplot's global state), the App. B
table in recovery_table.py (`appendix_b_table`, re-exported here).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from simpersona.features.scalars import SCALAR_NAMES, STRATA
from simpersona.personas.codes import as_codes as _codes

HEADLINE_FEATURES: tuple[str, ...] = (
    "intent_strength",
    "atc_rate",
    "checkout_rate",
    "browse_only_rate",
)
JS_GOOD = 0.10  # the paper counts stores with JS divergence below 0.10
PAPER_APPENDIX_B: dict[str, float] = {
    "js_mean": 0.054,
    "js_median": 0.045,
    "js_under_0_10": 36,
    "n_stores": 42,
    "r2_intent_strength": 0.96,
    "r2_atc_rate": 0.95,
    "r2_checkout_rate": 0.90,
    "r2_browse_only_rate": 0.87,
}

Reference = Any  # None | boolean mask over buyers | (codes, labels) of a separate set


# ---- token distributions -----------------------------------------------------------------
def _k(codes: np.ndarray, k: int | None, *more: np.ndarray) -> int:
    top = max([int(c.max()) + 1 for c in (codes, *more) if c.size] or [0])
    if k is None:
        return top
    if k < top:
        raise ValueError(f"k = {k} but codes go up to {top - 1}")
    return int(k)


def _shops(shop_ids: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(shop_ids)
    if s.dtype == object:
        s = s.astype(str)
    if s.shape != (n,):
        raise ValueError(f"shop_ids must have one entry per buyer ({n}), got shape {s.shape}")
    shops, inv = np.unique(s, return_inverse=True)
    return shops, inv.reshape(-1)


def token_share_matrix(
    shop_ids: Any, codes: Any, k: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(shops, counts, shares): the sorted distinct shops, counts (S, K) of buyers per store
    and token, and p̂_s(k) = counts / row sums (each row sums to 1)."""
    c = _codes(codes)
    shops, s = _shops(shop_ids, c.size)
    n_k = _k(c, k)
    counts = np.bincount(s * n_k + c, minlength=shops.size * n_k).reshape(shops.size, n_k)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    return shops, counts, shares


def token_distribution(shop_ids: Any, codes: Any, k: int | None = None) -> pl.DataFrame:
    """Per-store token distribution p̂_s(k) (paper Eq. 4) as a long frame: shop_id, token,
    count, share — one row per (store, token) with count > 0, sorted by shop and token."""
    shops, counts, shares = token_share_matrix(shop_ids, codes, k)
    si, ki = np.nonzero(counts)
    return pl.DataFrame(
        {
            "shop_id": shops[si],
            "token": ki.astype(np.int32),
            "count": counts[si, ki].astype(np.int64),
            "share": shares[si, ki].astype(np.float64),
        }
    )


# ---- divergences -------------------------------------------------------------------------
def js_divergence(p: Any, q: Any) -> float:
    """Jensen–Shannon divergence with base-2 logarithms, in [0, 1]:
    JSD(p, q) = ½ KL(p ‖ m) + ½ KL(q ‖ m), m = ½ (p + q). Inputs are normalised to sum 1.
    Computed from `scipy.special.rel_entr`, so identical distributions give exactly 0 (the
    square of scipy's JS *distance* can come out NaN there: sqrt of a rounding-negative
    number). Empty, negative or non-finite inputs raise: a divergence is never NaN."""
    from scipy.special import rel_entr

    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    if p.shape != q.shape or p.ndim != 1:
        raise ValueError(f"p and q must be 1-D of one length, got {p.shape} and {q.shape}")
    for name, v in (("p", p), ("q", q)):
        if not np.all(np.isfinite(v)) or np.any(v < 0) or v.sum() <= 0:
            raise ValueError(f"{name} is not a distribution (negative, non-finite or all zero)")
    p, q = p / p.sum(), q / q.sum()
    if np.allclose(p, q, rtol=1e-12, atol=1e-15):  # one distribution, up to normalisation
        return 0.0
    m = 0.5 * (p + q)
    d = 0.5 * (rel_entr(p, m).sum() + rel_entr(q, m).sum()) / math.log(2)
    return float(min(max(d, 0.0), 1.0))


# ---- stratum recovery --------------------------------------------------------------------
def _strata_order(*label_sets: np.ndarray) -> tuple[str, ...]:
    seen = set()
    for labels in label_sets:
        seen.update(np.unique(labels).tolist())
    if seen <= set(STRATA):
        return STRATA
    return tuple(sorted(seen))


def _reference(reference: Reference, codes: np.ndarray, labels: np.ndarray):
    """(ref_codes, ref_labels) from None (all buyers), a boolean mask, or a pair."""
    if reference is None:
        return codes, labels
    if isinstance(reference, tuple) and len(reference) == 2:
        rc, rl = reference
        rc = _codes(rc)
        rl = np.asarray(rl)
        if rl.shape[0] != rc.size:
            raise ValueError("reference codes and labels differ in length")
        return rc, rl
    mask = np.asarray(reference)
    if mask.dtype != bool or mask.shape != codes.shape:
        raise ValueError("reference must be None, a boolean mask over buyers, or (codes, labels)")
    return codes[mask], labels[mask]


def stratum_profiles(
    codes: Any, strata: Any, k: int, strata_order: Sequence[str] = STRATA
) -> tuple[np.ndarray, np.ndarray]:
    """(profiles, support): profiles (K, L) with row k = P(stratum | k), the stratum mix of
    the buyers on token k, columns in `strata_order`; support (K,) the buyer count per token.
    A token without buyers gets the overall stratum mix of the set (the best guess for a
    buyer of unknown type) so that every row is a distribution."""
    c = _codes(codes)
    lab = np.asarray(strata).astype(str)
    order = list(strata_order)
    col = np.array([order.index(x) if x in order else -1 for x in lab], dtype=np.int64)
    if (col < 0).any():
        missing = sorted(set(lab[col < 0].tolist()))
        raise ValueError(f"strata {missing} are not in strata_order {order}")
    counts = np.bincount(c * len(order) + col, minlength=k * len(order)).reshape(k, len(order))
    support = counts.sum(axis=1)
    overall = counts.sum(axis=0) / max(int(counts.sum()), 1)
    prof = np.where(
        support[:, None] > 0, counts / np.maximum(support[:, None], 1), overall[None, :]
    )
    return prof, support


@dataclass
class StratumRecovery:
    """`mix`: shop_id, stratum, real, recovered (long); `stores`: shop_id, n_buyers, js;
    `summary`: js_mean, js_median, js_under_0_10, n_stores, … (flat)."""

    mix: pl.DataFrame
    stores: pl.DataFrame
    summary: dict[str, Any]
    strata: tuple[str, ...]


def stratum_recovery(
    shop_ids: Any,
    codes: Any,
    strata: Any,
    *,
    k: int | None = None,
    reference: Reference = None,
    strata_order: Sequence[str] | None = None,
) -> StratumRecovery:
    """Recover each store's stratum mix from its token distribution (paper Eq. 5).

    real_s(j) = share of store s's buyers in stratum j; recovered_s = p̂_s @ P(stratum | k),
    with P(stratum | k) from `stratum_profiles` on the reference set: None (default) = all
    buyers given, as the paper does ("from all buyers assigned to that token"); a boolean
    mask over the buyers (e.g. the training buyers); or a separate (codes, strata) pair.
    Per store: js = `js_divergence(real_s, recovered_s)` (base 2). Summary: mean and median
    js over stores, the number of stores with js < 0.10, the number of stores."""
    c = _codes(codes)
    lab = np.asarray(strata).astype(str)
    if lab.shape[0] != c.size:
        raise ValueError("codes and strata differ in length")
    rc, rl = _reference(reference, c, lab)
    rl = np.asarray(rl).astype(str)
    order = tuple(strata_order) if strata_order is not None else _strata_order(lab, rl)
    n_k = _k(c, k, rc)
    prof, _ = stratum_profiles(rc, rl, n_k, order)
    shops, counts, shares = token_share_matrix(shop_ids, c, n_k)
    _, s = _shops(shop_ids, c.size)
    col = np.array([order.index(x) for x in lab], dtype=np.int64)
    real_counts = np.bincount(s * len(order) + col, minlength=shops.size * len(order))
    real = real_counts.reshape(shops.size, len(order)).astype(np.float64)
    n_buyers = real.sum(axis=1)
    real /= np.maximum(n_buyers[:, None], 1)
    recovered = shares @ prof
    js = np.array([js_divergence(real[i], recovered[i]) for i in range(shops.size)])
    mix = pl.DataFrame(
        {
            "shop_id": np.repeat(shops, len(order)),
            "stratum": np.tile(np.array(order), shops.size),
            "real": real.reshape(-1),
            "recovered": recovered.reshape(-1),
        }
    )
    stores = pl.DataFrame({"shop_id": shops, "n_buyers": n_buyers.astype(np.int64), "js": js})
    summary = {
        "n_stores": int(shops.size),
        "js_mean": float(np.mean(js)) if js.size else float("nan"),
        "js_median": float(np.median(js)) if js.size else float("nan"),
        "js_max": float(np.max(js)) if js.size else float("nan"),
        "js_under_0_10": int(np.sum(js < JS_GOOD)),
    }
    return StratumRecovery(mix=mix, stores=stores, summary=summary, strata=order)


# ---- feature recovery --------------------------------------------------------------------
def feature_matrix(
    features: Any, feature_names: Sequence[str] | None = None
) -> tuple[np.ndarray, tuple[str, ...]]:
    """(X, names): X (n, F) float64. `features` is a frame (polars/pandas; `feature_names`
    defaults to the 16 raw scalars SCALAR_NAMES) or a 2-D array (then `feature_names`
    names its columns, default f0, f1, …)."""
    if hasattr(features, "columns") and not isinstance(features, np.ndarray):
        names = tuple(feature_names) if feature_names is not None else SCALAR_NAMES
        missing = [n for n in names if n not in list(features.columns)]
        if missing:
            raise KeyError(f"features lack columns {missing}")
        x = np.column_stack([np.asarray(features[n], dtype=np.float64) for n in names])
        return x.reshape(len(features), len(names)), names
    x = np.asarray(features, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    names = (
        tuple(feature_names)
        if feature_names is not None
        else tuple(f"f{i}" for i in range(x.shape[1]))
    )
    if len(names) != x.shape[1]:
        raise ValueError(f"{len(names)} feature names for {x.shape[1]} columns")
    return x, names


def token_centroids(codes: Any, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(centroids, support): x̄_k (K, F) the mean of x over the buyers on token k; a token
    without buyers gets the overall mean of x. support (K,) is the buyer count per token."""
    c = _codes(codes)
    x = np.asarray(x, dtype=np.float64)
    support = np.bincount(c, minlength=k).astype(np.float64)
    sums = np.zeros((k, x.shape[1]))
    _sum_rows(sums, c, x)
    overall = x.mean(axis=0) if x.shape[0] else np.zeros(x.shape[1])
    cent = np.where(support[:, None] > 0, sums / np.maximum(support[:, None], 1), overall)
    return cent, support.astype(np.int64)


def _sum_rows(out: np.ndarray, c: np.ndarray, x: np.ndarray) -> None:
    for j in range(x.shape[1]):
        out[:, j] = np.bincount(c, weights=x[:, j], minlength=out.shape[0])


@dataclass
class FeatureRecovery:
    """`stores`: shop_id, n_buyers, feature, real, reconstructed (long); `r2`: feature → R²
    across stores; `summary`: r2_<feature> (flat)."""

    stores: pl.DataFrame
    r2: dict[str, float]
    summary: dict[str, Any]


def feature_recovery(
    shop_ids: Any,
    codes: Any,
    features: Any,
    *,
    feature_names: Sequence[str] | None = None,
    k: int | None = None,
    reference: Any = None,
) -> FeatureRecovery:
    """Reconstruct store-level feature means from token distributions (paper Eq. 6).

    real x_s = mean of the raw features over store s's buyers; x̂_s = Σ_k p̂_s(k)·x̄_k with
    x̄_k the token centroids (`token_centroids`) on the reference set: None = all buyers
    given, a boolean mask over them, or a separate (codes, features) pair. Per feature:
    R² = `sklearn.metrics.r2_score(real, reconstructed)` across stores, i.e.
    1 − Σ_s (x_s − x̂_s)² / Σ_s (x_s − mean_s x_s)² (stores weighted equally); NaN with fewer
    than 2 stores."""
    from sklearn.metrics import r2_score

    c = _codes(codes)
    x, names = feature_matrix(features, feature_names)
    if x.shape[0] != c.size:
        raise ValueError("codes and features differ in length")
    if reference is None:
        rc, rx = c, x
    elif isinstance(reference, tuple) and len(reference) == 2:
        rc = _codes(reference[0])
        rx, _ = feature_matrix(reference[1], names if feature_names is None else feature_names)
        if rx.shape[0] != rc.size:
            raise ValueError("reference codes and features differ in length")
    else:
        mask = np.asarray(reference)
        if mask.dtype != bool or mask.shape != c.shape:
            raise ValueError("reference must be None, a boolean mask, or (codes, features)")
        rc, rx = c[mask], x[mask]
    n_k = _k(c, k, rc)
    cent, _ = token_centroids(rc, rx, n_k)
    shops, counts, shares = token_share_matrix(shop_ids, c, n_k)
    _, s = _shops(shop_ids, c.size)
    n_buyers = counts.sum(axis=1)
    real_sum = np.zeros((shops.size, x.shape[1]))
    _sum_rows(real_sum, s, x)
    real = real_sum / np.maximum(n_buyers[:, None], 1)
    recon = shares @ cent
    r2: dict[str, float] = {}
    for j, nm in enumerate(names):
        r2[nm] = float(r2_score(real[:, j], recon[:, j])) if shops.size >= 2 else float("nan")
    stores = pl.DataFrame(
        {
            "shop_id": np.repeat(shops, len(names)),
            "n_buyers": np.repeat(n_buyers.astype(np.int64), len(names)),
            "feature": np.tile(np.array(names), shops.size),
            "real": real.reshape(-1),
            "reconstructed": recon.reshape(-1),
        }
    )
    return FeatureRecovery(stores=stores, r2=r2, summary={f"r2_{n}": v for n, v in r2.items()})


def raw_features_for(
    assignments: pl.DataFrame,
    buyer_features: pl.DataFrame,
    feature_names: Sequence[str] = SCALAR_NAMES,
) -> pl.DataFrame:
    """The raw features of the buyers in `assignments` (shop_id, buyer_id, …), row-aligned
    with it, from a `buyer_features` frame; raises if a buyer has no features."""
    keys = ["shop_id", "buyer_id"]
    feats = buyer_features.select([*keys, *feature_names])
    joined = (
        assignments.select(keys)
        .with_row_index("__row")
        .join(feats, on=keys, how="left")
        .sort("__row")
    )
    if joined.height != assignments.height:
        raise ValueError("buyer_features has duplicate (shop_id, buyer_id) rows")
    if joined[feature_names[0]].null_count():
        raise ValueError(f"{joined[feature_names[0]].null_count()} buyers lack raw features")
    return joined.select(list(feature_names))


# ---- all of it ---------------------------------------------------------------------------
def population_report(
    shop_ids: Any,
    codes: Any,
    strata: Any,
    features: Any,
    out_dir: str | os.PathLike[str] | None = None,
    *,
    feature_names: Sequence[str] | None = None,
    k: int | None = None,
    reference: Any = None,
    prefix: str = "",
) -> dict[str, Any]:
    """Stratum and feature recovery in one call.

    `reference` is None (all buyers) or a boolean mask over the buyers; it selects the
    buyers P(stratum | k) and the token centroids are estimated on. Returns
    {"figures": flat numbers (js_*, n_stores, r2_<feature>), "paths": {"stratum_recovery",
    "feature_recovery"} PNG paths (when `out_dir` is given), "stratum": StratumRecovery,
    "features": FeatureRecovery}."""
    c = _codes(codes)
    if reference is not None and not (
        isinstance(reference, np.ndarray | list) and np.asarray(reference).dtype == bool
    ):
        raise ValueError("population_report takes a boolean reference mask (or None)")
    mask = None if reference is None else np.asarray(reference)
    srec = stratum_recovery(shop_ids, c, strata, k=k, reference=mask)
    frec = feature_recovery(shop_ids, c, features, feature_names=feature_names, k=k, reference=mask)
    figures: dict[str, Any] = {f"{prefix}{n}": v for n, v in srec.summary.items()}
    figures.update({f"{prefix}{n}": v for n, v in frec.summary.items()})
    paths: dict[str, Path] = {}
    if out_dir is not None:
        out = Path(out_dir)
        from simpersona.personas.recovery_plots import plot_feature_recovery, plot_stratum_recovery

        paths["stratum_recovery"] = plot_stratum_recovery(
            srec, out / f"{prefix}stratum_recovery.png"
        )
        paths["feature_recovery"] = plot_feature_recovery(
            frec, out / f"{prefix}feature_recovery.png"
        )
    return {"figures": figures, "paths": paths, "stratum": srec, "features": frec}


def __getattr__(name: str) -> Any:
    """`appendix_b_table` (rendering) lives in recovery_table.py, which imports this module;
    it is re-exported here lazily so `distribution.appendix_b_table` keeps working."""
    if name == "appendix_b_table":
        from simpersona.personas.recovery_table import appendix_b_table

        return appendix_b_table
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
