"""Behavioural separation by auxiliary bin (paper §3.3, Table 3).

Agents are grouped by their token's bin on each head (`token_bins`: the modal bin of the
token's real buyers) and one score per agent is compared across the Low/Medium/High groups:

| head | agent score |
|---|---|
| purchase | 8·checkout_reached + 3·add_to_cart (the s_pur weights of paper App. E, per session) |
| engagement | `n_actions`, the actions of the session (the paper's proxy: no wall-clock) |
| exploration | `n_product_views + n_searches + n_collection_views` when the agent table has them, else an `exploration` column; NaN with a reason otherwise |

Statistics: Cohen's d (High − Low over the pooled SD), Welch's t (High vs Low,
`scipy.stats.ttest_ind(equal_var=False)`), Kruskal–Wallis over the non-empty bins
(`scipy.stats.kruskal`) and a permutation test: the statistic is the gradient, the
least-squares slope of the score on the bin index (0, 1, 2) over all agents; the scores are
shuffled `n_resamples` times (vectorised, seeded) and p = (1 + #{|slope*| ≥ |slope|}) /
(1 + n_resamples). Degenerate inputs (an empty bin, zero variance, fewer than two values)
give NaN and a `reason`, never an exception.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy import stats

from simpersona.evaluation.tables import BIN_NAMES, agent_token_expr, require_columns

HEADS: tuple[str, ...] = ("purchase", "engagement", "exploration")
EXPLORATION_PARTS: tuple[str, ...] = ("n_product_views", "n_searches", "n_collection_views")


@dataclass(frozen=True)
class SeparationConfig:
    n_resamples: int = 10_000
    seed: int = 0
    chunk: int = 1_000  # shuffles per vectorised block (memory: chunk × agents floats)


def cohens_d(low: Sequence[float], high: Sequence[float]) -> float:
    """(mean(high) − mean(low)) / pooled SD, pooled SD = sqrt(((n1−1)s1² + (n2−1)s2²) /
    (n1 + n2 − 2)); NaN with fewer than two values per group or zero pooled SD."""
    a, b = np.asarray(low, dtype=float), np.asarray(high, dtype=float)
    if a.size < 2 or b.size < 2:
        return math.nan
    pooled = ((a.size - 1) * a.var(ddof=1) + (b.size - 1) * b.var(ddof=1)) / (a.size + b.size - 2)
    if pooled <= 0:
        return math.nan
    return float((b.mean() - a.mean()) / math.sqrt(pooled))


def welch_t(low: Sequence[float], high: Sequence[float]) -> tuple[float, float]:
    """Welch's t (high vs low) and its two-sided p; NaNs when undefined."""
    a, b = np.asarray(low, dtype=float), np.asarray(high, dtype=float)
    if a.size < 2 or b.size < 2 or (a.var(ddof=1) == 0 and b.var(ddof=1) == 0):
        return math.nan, math.nan
    res = stats.ttest_ind(b, a, equal_var=False)
    return float(res.statistic), float(res.pvalue)


def kruskal_wallis(groups: Sequence[Sequence[float]]) -> tuple[float, float]:
    """Kruskal–Wallis H and p over the non-empty groups; NaNs with fewer than two groups or
    when all values are identical."""
    gs = [np.asarray(g, dtype=float) for g in groups if len(g)]
    if len(gs) < 2:
        return math.nan, math.nan
    allv = np.concatenate(gs)
    if np.all(allv == allv[0]):
        return math.nan, math.nan
    res = stats.kruskal(*gs)
    return float(res.statistic), float(res.pvalue)


def gradient(scores: np.ndarray, bins: np.ndarray) -> float:
    """Least-squares slope of the score on the bin index."""
    x = bins.astype(float) - bins.mean()
    return float(x @ (scores - scores.mean()) / (x @ x))


def permutation_pvalue(
    scores: Sequence[float] | np.ndarray,
    bins: Sequence[int] | np.ndarray,
    n_resamples: int = 10_000,
    seed: int = 0,
    chunk: int = 1_000,
) -> float:
    """Two-sided permutation p of the gradient (see the module docstring); NaN when the bins
    or the scores do not vary."""
    y = np.asarray(scores, dtype=float)
    x = np.asarray(bins, dtype=float)
    if y.size < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return math.nan
    xc = x - x.mean()
    yc = y - y.mean()
    denom = xc @ xc
    obs = abs(xc @ yc / denom)
    tol = 1e-12 * max(1.0, obs)
    rng = np.random.default_rng(seed)
    hits, done = 0, 0
    while done < n_resamples:
        m = min(chunk, n_resamples - done)
        shuffled = rng.permuted(np.broadcast_to(yc, (m, yc.size)), axis=1)
        hits += int(np.count_nonzero(np.abs(shuffled @ xc / denom) >= obs - tol))
        done += m
    return (1 + hits) / (1 + n_resamples)


def agent_scores(agents: pl.DataFrame) -> pl.DataFrame:
    """The agents with `purchase_score`, `engagement_score` and `exploration_score` (null
    when the table has no exploration columns)."""
    require_columns(agents, ("add_to_cart", "checkout_reached", "n_actions"), "agent results")
    if all(c in agents.columns for c in EXPLORATION_PARTS):
        explore = pl.sum_horizontal(*[pl.col(c).cast(pl.Float64) for c in EXPLORATION_PARTS])
    elif "exploration" in agents.columns:
        explore = pl.col("exploration").cast(pl.Float64)
    else:
        explore = pl.lit(None, dtype=pl.Float64)
    return agents.with_columns(
        (8 * pl.col("checkout_reached").cast(pl.Float64) + 3 * pl.col("add_to_cart").cast(
            pl.Float64)).alias("purchase_score"),
        pl.col("n_actions").cast(pl.Float64).alias("engagement_score"),
        explore.alias("exploration_score"),
    )  # fmt: skip


def with_bins(agents: pl.DataFrame, bins: pl.DataFrame) -> pl.DataFrame:
    """Agents joined with their token's bins (`token_bins` output); agents whose token has
    no bins keep nulls."""
    require_columns(bins, ("token",), "token bins")
    a = agents.with_columns(agent_token_expr(agents).cast(pl.Int64))
    drop = [c for c in bins.columns if c != "token" and c in a.columns]
    return a.drop(drop).join(bins.with_columns(pl.col("token").cast(pl.Int64)), on="token",
                             how="left")  # fmt: skip


def separation_row(
    head: str, scores: np.ndarray, bins: np.ndarray, config: SeparationConfig | None = None
) -> dict[str, object]:
    """One Table-3 row: means and counts per bin, d, Welch t/p, KW H/p, permutation p and
    `reason` (why a statistic is NaN, else null)."""
    cfg = config or SeparationConfig()
    keep = ~np.isnan(scores) & (bins >= 0)
    scores, bins = scores[keep], bins[keep]
    groups = [scores[bins == b] for b in range(3)]
    row: dict[str, object] = {"head": head}
    for name, g in zip(BIN_NAMES, groups, strict=True):
        row[f"n_{name.lower()}"] = int(g.size)
        row[f"mean_{name.lower()}"] = float(g.mean()) if g.size else math.nan
    reasons = []
    if scores.size == 0:
        reasons.append("no agents with a score and a bin")
    for name, g in zip(BIN_NAMES, groups, strict=True):
        if scores.size and g.size == 0:
            reasons.append(f"no agents in the {name} bin")
    low, high = groups[0], groups[2]
    if low.size >= 2 and high.size >= 2 and low.var(ddof=1) == 0 and high.var(ddof=1) == 0:
        reasons.append("zero variance in Low and High")
    elif scores.size and np.all(scores == scores[0]):
        reasons.append("all scores identical")
    elif 0 < low.size < 2 or 0 < high.size < 2:
        reasons.append("fewer than two agents in Low or High")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        row["cohens_d"] = cohens_d(low, high)
        row["welch_t"], row["welch_p"] = welch_t(low, high)
        row["kw_h"], row["kw_p"] = kruskal_wallis(groups)
    row["perm_p"] = (
        permutation_pvalue(scores, bins, cfg.n_resamples, cfg.seed, cfg.chunk)
        if scores.size
        else math.nan
    )
    row["reason"] = "; ".join(reasons) or None
    return row


def separation_table(
    agents: pl.DataFrame, bins: pl.DataFrame, config: SeparationConfig | None = None
) -> pl.DataFrame:
    """Table 3 (statistics part) for one policy's agents: one row per head."""
    a = with_bins(agent_scores(agents), bins)
    rows = []
    for head in HEADS:
        score = a[f"{head}_score"]
        b = a[f"{head}_bin"] if f"{head}_bin" in a.columns else pl.Series([None] * a.height)
        s = score.cast(pl.Float64).fill_null(np.nan).to_numpy()
        bn = b.cast(pl.Int64).fill_null(-1).to_numpy()
        row = separation_row(head, s, bn, config)
        if score.null_count() == a.height and a.height:
            row["reason"] = (
                f"the agent table has no exploration columns ({', '.join(EXPLORATION_PARTS)})"
            )
        rows.append(row)
    return pl.DataFrame(rows, schema=_SCHEMA)


_SCHEMA = {
    "head": pl.Utf8,
    "n_low": pl.Int64,
    "mean_low": pl.Float64,
    "n_medium": pl.Int64,
    "mean_medium": pl.Float64,
    "n_high": pl.Int64,
    "mean_high": pl.Float64,
    "cohens_d": pl.Float64,
    "welch_t": pl.Float64,
    "welch_p": pl.Float64,
    "kw_h": pl.Float64,
    "kw_p": pl.Float64,
    "perm_p": pl.Float64,
    "reason": pl.Utf8,
}


def purchase_funnel(agents: pl.DataFrame, bins: pl.DataFrame) -> pl.DataFrame:
    """Table 3 (funnel part): per purchase bin, the agents and the shares (0–1) with an
    add-to-cart, a checkout reached and a purchase. Every bin has a row (NaN when empty)."""
    a = with_bins(agents, bins).filter(pl.col("purchase_bin").is_not_null())
    rows = []
    for b, name in enumerate(BIN_NAMES):
        sub = a.filter(pl.col("purchase_bin") == b)
        rate = lambda c: float(sub[c].cast(pl.Float64).mean()) if sub.height else math.nan  # noqa: E731,B023
        rows.append(
            {
                "purchase_bin": name,
                "agents": sub.height,
                "atc_rate": rate("add_to_cart"),
                "checkout_rate": rate("checkout_reached"),
                "purchase_rate": rate("purchase"),
            }
        )
    return pl.DataFrame(rows)


def separation_figures(table: pl.DataFrame, funnel: pl.DataFrame) -> dict[str, float]:
    """`purchase_cohens_d`, `engagement_cohens_d`, `exploration_cohens_d`, their
    permutation p's, the bin means and the funnel rates, flat."""
    out: dict[str, float] = {}
    for r in table.iter_rows(named=True):
        h = r["head"]
        for k in ("cohens_d", "welch_p", "kw_p", "perm_p", "mean_low", "mean_medium",
                  "mean_high"):  # fmt: skip
            v = r[k]
            out[f"{h}_{k}"] = float(v) if v is not None else math.nan
    for r in funnel.iter_rows(named=True):
        b = r["purchase_bin"].lower()
        for k in ("atc_rate", "checkout_rate", "purchase_rate"):
            out[f"funnel_{k}_{b}"] = r[k]
    return out
