"""Codebook quality report (paper Table 1) for any assignment of buyers to codes:
VQ-VAE tokens or k-means clusters.

Inputs are parallel arrays over buyers: `codes` (int, one code per buyer), `strata` (funnel
stratum A–E), `bins` ((n, 3) Low/Medium/High = 0/1/2 for the engagement, exploration and
purchase heads, in that order) and `vectors` ((n, 403) buyer vectors). Every metric is a plain
function whose docstring states the exact definition; where the paper is vague the choice is
ours and `docs/codebook-quality.md` explains it. Shares are returned as fractions in [0, 1];
`codebook_report` turns them into percentages (`*_pct` keys), as the paper prints them.
This module computes; quality_table.py renders (tables, console, `purity_ceilings_line`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from simpersona.features.labels import HEADS
from simpersona.personas.codes import as_codes as _codes

# Rendering lives in quality_table.py; re-exported here, where callers import it from.
from simpersona.personas.quality_table import purity_ceilings_line as purity_ceilings_line

PURCHASE_SIDE: tuple[str, ...] = ("A", "B", "C")  # strata with an add-to-cart or beyond
BROWSE_SIDE: tuple[str, ...] = ("D",)  # window shoppers
MIXING_THRESHOLD = 0.20  # "substantial" share of each side for incompatible mixing
INCOHERENCE_THRESHOLD = 0.10  # "substantial" share of Low and of High for incoherence
LOW, HIGH = 0, 2
CH_MAX_SAMPLES = 100_000
# The behavioural part of a 403-d buyer vector: its 16 robust-z scalars (features.vectors
# SCALAR_SLICE). Calinski–Harabasz is reported on the whole vector (the paper's space) and on
# these dimensions alone; docs/codebook-quality.md says why.
BEHAVIOUR_SLICE = slice(0, 16)
VECTOR_DIM = 403


# ---- helpers -----------------------------------------------------------------------------
def _n_codes(codes: np.ndarray, k: int | None) -> int:
    top = int(codes.max()) + 1 if codes.size else 0
    if k is None:
        return top
    if k < top:
        raise ValueError(f"k = {k} but codes go up to {top - 1}")
    return int(k)


def _encode(labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """(values, inverse): the distinct labels (sorted) and each buyer's index into them."""
    lab = np.asarray(labels)
    if lab.dtype == object:
        lab = lab.astype(str)
    values, inverse = np.unique(lab, return_inverse=True)
    return values, inverse.reshape(-1)


def contingency(codes: Any, labels: Any, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(counts, values): counts[c, j] = buyers of code c with label values[j]; shape (K, L)."""
    c = _codes(codes)
    values, inv = _encode(labels)
    if inv.shape[0] != c.shape[0]:
        raise ValueError("codes and labels differ in length")
    n_codes = _n_codes(c, k)
    counts = np.zeros((n_codes, len(values)), dtype=np.int64)
    np.add.at(counts, (c, inv), 1)
    return counts, values


def _shares(counts: np.ndarray) -> np.ndarray:
    size = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(size > 0, counts / np.maximum(size, 1), np.nan)


# ---- stratum purity and mixing -----------------------------------------------------------
def code_purity(codes: Any, labels: Any, k: int | None = None) -> np.ndarray:
    """Per code c: purity_c = max_s n_{c,s} / n_c, the share of its majority label; NaN for
    a code without buyers. Shape (K,)."""
    counts, _ = contingency(codes, labels, k)
    size = counts.sum(axis=1)
    out = np.full(counts.shape[0], np.nan)
    used = size > 0
    out[used] = counts[used].max(axis=1) / size[used]
    return out


def mean_stratum_purity(codes: Any, strata: Any, weighted: bool = False) -> float:
    """Mean stratum purity.

    weighted=False (the headline, "mean over codes"): (1/|U|) Σ_{c ∈ U} purity_c over the
    used codes U (codes with ≥ 1 buyer), every code counting once whatever its size.
    weighted=True: Σ_c n_c·purity_c / N, i.e. the share of buyers whose stratum is the
    majority stratum of their code."""
    counts, _ = contingency(codes, strata)
    size = counts.sum(axis=1)
    used = size > 0
    if not used.any():
        return float("nan")
    if weighted:
        return float(counts[used].max(axis=1).sum() / size.sum())
    return float(np.mean(counts[used].max(axis=1) / size[used]))


def incompatible_mixing_code_ids(
    codes: Any,
    strata: Any,
    threshold: float = MIXING_THRESHOLD,
    purchase_side: Sequence[str] = PURCHASE_SIDE,
    browse_side: Sequence[str] = BROWSE_SIDE,
    min_size: int = 1,
) -> np.ndarray:
    """Codes (sorted ids) where both sides are substantial: with n_c buyers (all strata,
    E included, in the denominator), share(purchase side, A ∪ B ∪ C) ≥ threshold AND
    share(browse side, D) ≥ threshold. Codes with fewer than `min_size` buyers are skipped
    (default 1: every used code counts)."""
    counts, values = contingency(codes, strata)
    size = counts.sum(axis=1)
    values = values.astype(str)
    buy = counts[:, np.isin(values, list(purchase_side))].sum(axis=1)
    browse = counts[:, np.isin(values, list(browse_side))].sum(axis=1)
    ok = (size >= max(min_size, 1)) & (buy > 0) & (browse > 0)
    denom = np.maximum(size, 1)
    mixed = ok & (buy / denom >= threshold) & (browse / denom >= threshold)
    return np.flatnonzero(mixed)


def incompatible_mixing_codes(
    codes: Any,
    strata: Any,
    threshold: float = MIXING_THRESHOLD,
    purchase_side: Sequence[str] = PURCHASE_SIDE,
    browse_side: Sequence[str] = BROWSE_SIDE,
    min_size: int = 1,
) -> int:
    """Number of incompatible-mixing codes (see `incompatible_mixing_code_ids`)."""
    return int(
        incompatible_mixing_code_ids(
            codes, strata, threshold, purchase_side, browse_side, min_size
        ).size
    )


# ---- auxiliary-head coherence ------------------------------------------------------------
def incoherent_codes(codes: Any, head_bins: Any, threshold: float = INCOHERENCE_THRESHOLD):
    """Boolean (K,) mask of codes spanning non-adjacent bins of one head: the code holds at
    least one Low (0) and one High (2) buyer, and share(Low) ≥ threshold and share(High) ≥
    threshold of its buyers. threshold = 0 gives the strictest reading: any Low and any
    High buyer together."""
    c = _codes(codes)
    b = np.asarray(head_bins).astype(np.int64).reshape(-1)
    if b.shape[0] != c.shape[0]:
        raise ValueError("codes and bins differ in length")
    n_codes = _n_codes(c, None)
    size = np.bincount(c, minlength=n_codes)
    low = np.bincount(c[b == LOW], minlength=n_codes)
    high = np.bincount(c[b == HIGH], minlength=n_codes)
    denom = np.maximum(size, 1)
    return (low > 0) & (high > 0) & (low / denom >= threshold) & (high / denom >= threshold)


def incoherent_share(codes: Any, head_bins: Any, threshold: float = INCOHERENCE_THRESHOLD):
    """Share of buyers (fraction of all N) assigned to a code that `incoherent_codes` flags
    for this head — the paper's "% of buyers assigned to codes that span non-adjacent bins"."""
    c = _codes(codes)
    if c.size == 0:
        return float("nan")
    bad = incoherent_codes(c, head_bins, threshold)
    return float(bad[c].mean())


def incoherence_by_head(
    codes: Any, bins: Any, threshold: float = INCOHERENCE_THRESHOLD, heads=HEADS
) -> dict[str, float]:
    """`incoherent_share` for each column of `bins` (n, len(heads)), keyed by head name."""
    b = np.asarray(bins)
    if b.ndim == 1:
        b = b[:, None]
    if b.shape[1] != len(heads):
        raise ValueError(f"bins has {b.shape[1]} columns, expected {len(heads)} ({heads})")
    return {h: incoherent_share(codes, b[:, i], threshold) for i, h in enumerate(heads)}


# ---- geometry ----------------------------------------------------------------------------
def code_pairwise_cosine(codes: Any, vectors: Any, k: int | None = None) -> np.ndarray:
    """Per code c with m_c ≥ 2 members: the mean cosine similarity over its m_c(m_c − 1)
    ordered pairs of distinct members, NaN for codes with fewer than 2 members. Shape (K,).

    Exact, no sampling: with u_i = x_i/||x_i|| (a zero vector stays zero, cosine 0),
    Σ_{i≠j} u_i·u_j = ||Σ_i u_i||² − Σ_i ||u_i||², an O(n·d) computation."""
    c = _codes(codes)
    x = np.asarray(vectors, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] != c.shape[0]:
        raise ValueError("vectors must be (n, d) with one row per code")
    n_codes = _n_codes(c, k)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    u = np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)
    member = sp.csr_matrix(
        (np.ones(c.size), (c, np.arange(c.size))), shape=(n_codes, c.size), dtype=np.float64
    )
    total = np.asarray(member @ u)
    self_sum = np.bincount(c, weights=np.einsum("ij,ij->i", u, u), minlength=n_codes)
    m = np.bincount(c, minlength=n_codes).astype(np.float64)
    out = np.full(n_codes, np.nan)
    ok = m >= 2
    out[ok] = (np.einsum("ij,ij->i", total[ok], total[ok]) - self_sum[ok]) / (m[ok] * (m[ok] - 1))
    return out


def mean_pairwise_cosine(codes: Any, vectors: Any, weighted: bool = False) -> float:
    """Mean within-code pairwise cosine: the mean of `code_pairwise_cosine` over codes with
    ≥ 2 members (each code once; weighted=True weights each code by its size)."""
    c = _codes(codes)
    per = code_pairwise_cosine(c, vectors)
    ok = ~np.isnan(per)
    if not ok.any():
        return float("nan")
    if weighted:
        m = np.bincount(c, minlength=per.size).astype(np.float64)
        return float(np.sum(per[ok] * m[ok]) / m[ok].sum())
    return float(per[ok].mean())


def calinski_harabasz(
    codes: Any, vectors: Any, max_samples: int | None = CH_MAX_SAMPLES, seed: int = 0
) -> float:
    """Calinski–Harabasz index (paper App. H): [SS_between/(K − 1)] / [SS_within/(N − K)]
    with K the number of distinct codes present, computed by
    `sklearn.metrics.calinski_harabasz_score` on the vectors. When N > max_samples a uniform
    random subset of max_samples buyers (seeded) is scored. NaN when it is undefined
    (fewer than 2 codes, or as many codes as buyers)."""
    from sklearn.metrics import calinski_harabasz_score

    c = _codes(codes)
    x = np.asarray(vectors)
    if max_samples is not None and c.size > max_samples:
        idx = np.sort(np.random.default_rng(seed).choice(c.size, max_samples, replace=False))
        c, x = c[idx], x[idx]
    n_labels = np.unique(c).size
    if n_labels < 2 or n_labels >= c.size:
        return float("nan")
    return float(calinski_harabasz_score(x, c))


def group_pure_codes(vectors: Any, groups: Any, k: int, seed: int = 0) -> np.ndarray:
    """A k-code partition in which no code mixes two groups, as tight as k-means can make it:
    the k codes are shared out in proportion to each group's within-group sum of squares
    (at least one per group, at most one per distinct vector), then Lloyd k-means runs inside every
    group. Its Calinski–Harabasz index estimates the best a codebook that respects the
    groups (strata, or strata × bins) can score in the vectors' space: the ceiling that
    behavioural purity puts on the geometric figure. Returns (n,) int codes in [0, k)."""
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    x = np.asarray(vectors, dtype=np.float64)
    _, inv = _encode(groups)
    n_groups = int(inv.max()) + 1 if inv.size else 0
    if n_groups > k:
        raise ValueError(f"{n_groups} groups do not fit in {k} codes")
    parts = [x[inv == g] for g in range(n_groups)]  # (n_g, d) each
    # distinct vectors per group: more codes than that would only split identical buyers
    sizes = np.array([np.unique(p, axis=0).shape[0] for p in parts])
    ss = np.array([((p - p.mean(0)) ** 2).sum() for p in parts])
    share = np.maximum(1, np.floor(ss / max(ss.sum(), 1e-12) * k)).astype(int)
    share = np.minimum(share, sizes)
    while share.sum() > k:  # the floor of one code per group can overshoot
        share[np.argmax(share)] -= 1
    while share.sum() < min(k, sizes.sum()):  # the rest to the loosest groups per code
        open_ = np.flatnonzero(share < sizes)
        share[open_[np.argmax(ss[open_] / share[open_])]] += 1
    codes = np.empty(x.shape[0], dtype=np.int64)
    offset = 0
    # One thread: many small k-means; OpenMP's start-up and barriers made 2 threads 6x slower
    # (5.3 s vs 0.9 s on the 4,158-buyer planted split), and far worse on a busy machine.
    with threadpool_limits(limits=1):
        for g, part in enumerate(parts):
            if share[g] == 1:
                codes[inv == g] = offset
            else:
                km = KMeans(int(share[g]), n_init=1, random_state=seed).fit(part)
                codes[inv == g] = offset + km.labels_
            offset += int(share[g])
    return codes


def purity_ceilings(
    vectors: Any, strata: Any, bins: Any, k: int, seed: int = 0
) -> dict[str, float]:
    """Calinski–Harabasz on the vectors of the tightest k-code codebooks (`group_pure_codes`)
    that keep the strata apart (`ch_pure_strata`) and the strata × the three auxiliary bins
    apart (`ch_pure_strata_bins`). A behaviourally pure codebook can hardly score above
    them; k-means, bound by neither, usually does. A ceiling whose groups outnumber the k
    codes (a small codebook) is left out: no k-code codebook keeps them apart."""
    b = np.asarray(bins, dtype=np.int64).reshape(len(strata), -1)
    st = np.asarray(strata).astype(str)
    behaviour = np.char.add(st, np.array(["".join(map(str, row)) for row in b], dtype=str))
    return {
        f"ch_pure_{name}": calinski_harabasz(group_pure_codes(vectors, g, k, seed), vectors)
        for name, g in (("strata", st), ("strata_bins", behaviour))
        if np.unique(g).size <= k
    }


# ---- usage -------------------------------------------------------------------------------
def codebook_usage(codes: Any, k: int | None = None) -> dict[str, float]:
    """Usage of a K-entry codebook: p_k = n_k/N; entropy H = −Σ p_k ln p_k (nats; also in
    bits); perplexity = exp(H) (K when usage is uniform, 1 when one code takes all);
    used = #{k: n_k > 0}; dead = K − used (codes with zero buyers); singletons =
    #{k: n_k = 1}. K defaults to max(code) + 1."""
    c = _codes(codes)
    n_codes = _n_codes(c, k)
    counts = np.bincount(c, minlength=n_codes).astype(np.float64)
    used = int((counts > 0).sum())
    if c.size == 0:
        h = float("nan")
    else:
        p = counts[counts > 0] / c.size
        h = float(-(p * np.log(p)).sum())
    return {
        "k": n_codes,
        "used_codes": used,
        "dead_codes": n_codes - used,
        "singleton_codes": int((counts == 1).sum()),
        "entropy_nats": h,
        "entropy_bits": h / math.log(2) if not math.isnan(h) else h,
        "perplexity": math.exp(h) if not math.isnan(h) else h,
    }


# ---- planted types (generated data) ------------------------------------------------------
def majority_map(codes: Any, labels: Any) -> np.ndarray:
    """Each buyer's code replaced by the code's majority label (ties: the smallest label in
    sorted order). Returns labels, one per buyer."""
    c = _codes(codes)
    counts, values = contingency(c, labels)
    best = counts.argmax(axis=1)
    return values[best[c]]


def planted_agreement(codes: Any, planted: Any) -> dict[str, float]:
    """Agreement of codes with planted types: ARI and NMI (sklearn, NMI with the arithmetic
    mean) between codes and types — a 256-code partition of a handful of types cannot reach
    ARI 1 even when every code is pure — and, reported separately, the ARI between the types
    and the codes mapped to their majority type (`majority_map`), which is 1.0 when the codes
    refine the types, plus the share of buyers whose type is their code's majority type.
    Buyers whose type is missing (None/NaN) are left out; `n_known` counts the rest (all
    metrics are NaN when no type is known)."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    c = _codes(codes)
    p = np.asarray(planted, dtype=object).reshape(-1)
    if p.shape[0] != c.shape[0]:
        raise ValueError("codes and planted types differ in length")
    known = np.array([not _missing(v) for v in p], dtype=bool)
    out = {"n_known": int(known.sum())}
    if not known.any():
        nan = float("nan")
        return {
            "ari": nan,
            "nmi": nan,
            "majority_ari": nan,
            "majority_accuracy": nan,
            "n_types": 0,
            **out,
        }
    c = c[known]
    _, truth = _encode(p[known].astype(str))
    mapped = majority_map(c, truth)
    return {
        "ari": float(adjusted_rand_score(truth, c)),
        "nmi": float(normalized_mutual_info_score(truth, c)),
        "majority_ari": float(adjusted_rand_score(truth, mapped)),
        "majority_accuracy": float(np.mean(mapped == truth)),
        "n_types": int(np.unique(truth).size),
        **out,
    }


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


# ---- report ------------------------------------------------------------------------------
def codebook_report(
    name: str,
    codes: Any,
    strata: Any,
    bins: Any,
    vectors: Any,
    planted: Any = None,
    *,
    k: int | None = None,
    mixing_threshold: float = MIXING_THRESHOLD,
    incoherence_threshold: float = INCOHERENCE_THRESHOLD,
    mixing_min_size: int = 1,
    ch_max_samples: int | None = CH_MAX_SAMPLES,
    seed: int = 0,
) -> dict[str, Any]:
    """All Table 1 metrics plus usage (and planted-type agreement when `planted` is given)
    as one flat dict. Shares are percentages (`*_pct`). `k` is the codebook size (dead codes
    are counted against it; default max(code) + 1). Calinski–Harabasz is computed on the
    vectors as given (`calinski_harabasz`) and, for 403-d buyer vectors, on their 16
    behavioural scalars alone (`calinski_harabasz_behaviour`)."""
    c = _codes(codes)
    x = np.asarray(vectors)
    n = c.size
    for what, arr in (("strata", strata), ("bins", bins), ("vectors", x)):
        if len(arr) != n:
            raise ValueError(f"{what} has {len(arr)} rows, codes has {n}")
    rep: dict[str, Any] = {"name": name, "n_buyers": int(n)}
    usage = codebook_usage(c, k)
    rep.update(
        {kk: usage[kk] for kk in ("k", "used_codes", "dead_codes", "singleton_codes", "perplexity")}
    )
    rep["stratum_purity_pct"] = 100 * mean_stratum_purity(c, strata)
    rep["stratum_purity_weighted_pct"] = 100 * mean_stratum_purity(c, strata, weighted=True)
    rep["incompatible_mixing_codes"] = incompatible_mixing_codes(
        c, strata, mixing_threshold, min_size=mixing_min_size
    )
    for h, v in incoherence_by_head(c, bins, incoherence_threshold).items():
        rep[f"incoherent_{h}_pct"] = 100 * v
    for h, v in incoherence_by_head(c, bins, 0.0).items():
        rep[f"incoherent_any_{h}_pct"] = 100 * v
    rep["pairwise_cosine"] = mean_pairwise_cosine(c, x)
    rep["pairwise_cosine_buyer_weighted"] = mean_pairwise_cosine(c, x, weighted=True)
    rep["calinski_harabasz"] = calinski_harabasz(c, x, ch_max_samples, seed)
    if x.ndim == 2 and x.shape[1] == VECTOR_DIM:
        xb = x[:, BEHAVIOUR_SLICE]
        rep["calinski_harabasz_behaviour"] = calinski_harabasz(c, xb, ch_max_samples, seed)
    rep["calinski_harabasz_n"] = int(min(n, ch_max_samples) if ch_max_samples else n)
    rep["mixing_threshold"] = float(mixing_threshold)
    rep["incoherence_threshold"] = float(incoherence_threshold)
    if planted is not None:
        if len(planted) != n:
            raise ValueError(f"planted has {len(planted)} rows, codes has {n}")
        agree = planted_agreement(c, planted)
        rep["planted_ari"] = agree["ari"]
        rep["planted_nmi"] = agree["nmi"]
        rep["planted_majority_ari"] = agree["majority_ari"]
        rep["planted_majority_accuracy_pct"] = 100 * agree["majority_accuracy"]
        rep["planted_types"] = agree["n_types"]
        rep["planted_known"] = agree["n_known"]
    return rep


def bins_matrix(frame: Any) -> np.ndarray:
    """(n, 3) int array of `engagement_bin`, `exploration_bin`, `purchase_bin` columns of a
    buyer-vectors frame (polars or pandas)."""
    return np.column_stack([np.asarray(frame[f"{h}_bin"]) for h in HEADS]).astype(np.int64)


def vector_matrix(column: Any) -> np.ndarray:
    """(n, d) float32 matrix from a polars Array/List column (or anything array-like)."""
    arr = column.to_numpy() if hasattr(column, "to_numpy") else np.asarray(column)
    if arr.dtype == object:
        arr = np.stack([np.asarray(r, dtype=np.float32) for r in arr])
    return np.asarray(arr, dtype=np.float32)


def report_from_frame(name: str, frame: Any, codes: Any, planted: Any = None, **kw) -> dict:
    """`codebook_report` on a buyer-vectors frame (stratum, *_bin, vector) row-aligned with
    `codes`."""
    return codebook_report(
        name,
        codes,
        np.asarray(frame["stratum"]).astype(str),
        bins_matrix(frame),
        vector_matrix(frame["vector"]),
        planted,
        **kw,
    )
