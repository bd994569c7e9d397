"""Ablations: two-stage vs single-stage fine-tuning (App. F, Tables 7–8) and the persona
token under neutral intents (App. I, Table 9). Input: agent-result tables, one per variant.

An *error* is any outcome other than `goal_reached`. Rates are shares (0–1); the report
shows them as percentages.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import polars as pl

from simpersona.evaluation.tables import OUTCOMES, require_columns
from simpersona.polars_scalars import as_float


def outcome_distribution(variants: Mapping[str, pl.DataFrame]) -> pl.DataFrame:
    """Table 7: per outcome (in `OUTCOMES` order), `<variant>_count` and `<variant>_share`."""
    out = pl.DataFrame({"outcome": list(OUTCOMES)})
    for name, df in variants.items():
        require_columns(df, ("outcome",), f"agent results ({name})")
        unknown = sorted(set(df["outcome"].drop_nulls().to_list()) - set(OUTCOMES))
        if unknown:
            raise ValueError(f"agent results ({name}): unknown outcome(s) {unknown}")
        counts = df.group_by("outcome").agg(pl.len().alias(f"{name}_count"))
        out = out.join(counts, on="outcome", how="left").with_columns(
            pl.col(f"{name}_count").fill_null(0).cast(pl.Int64)
        )
        total = max(df.height, 1)
        out = out.with_columns((pl.col(f"{name}_count") / total).alias(f"{name}_share"))
    return out


def per_shop_rates(agents: pl.DataFrame) -> pl.DataFrame:
    """Per shop: runs, error rate (1 − goal reached), goal-reached rate and the rate of each
    error outcome."""
    require_columns(agents, ("shop_id", "outcome"), "agent results")
    rates = [(pl.col("outcome") == o).cast(pl.Float64).mean().alias(f"{o}_rate") for o in OUTCOMES]
    return (
        agents.group_by("shop_id")
        .agg(
            pl.len().alias("runs"),
            (pl.col("outcome") != "goal_reached").cast(pl.Float64).mean().alias("error_rate"),
            *rates,
        )
        .sort("shop_id")
    )


def error_distribution_stats(agents: pl.DataFrame) -> dict[str, float]:
    """Table 8 for one variant: the per-shop error-rate distribution (mean, std, CV, min,
    max, shops under 10 % / over 30 % / over 50 % error, lowest goal-reached rate, shops under
    50 % / 70 % goal reached) and the per-shop `other` rate (mean, max; Table 7's
    malformed-output share overall as `other_share`)."""
    shops = per_shop_rates(agents)
    e = shops["error_rate"].to_numpy()
    g = shops["goal_reached_rate"].to_numpy()
    o = shops["other_rate"].to_numpy()
    if e.size == 0:
        return {k: math.nan for k in _STAT_ORDER}
    mean = float(e.mean())
    std = float(e.std(ddof=1)) if e.size > 1 else math.nan
    return {
        "shops": float(e.size),
        "mean_error": mean,
        "std_error": std,
        "cv_error": std / mean if mean > 0 and not math.isnan(std) else math.nan,
        "min_error": float(e.min()),
        "max_error": float(e.max()),
        "shops_error_below_10": float((e < 0.10).sum()),
        "shops_error_above_30": float((e > 0.30).sum()),
        "shops_error_above_50": float((e > 0.50).sum()),
        "min_goal_reached": float(g.min()),
        "shops_goal_below_50": float((g < 0.50).sum()),
        "shops_goal_below_70": float((g < 0.70).sum()),
        "mean_other": float(o.mean()),
        "max_other": float(o.max()),
        "other_share": as_float((agents["outcome"] == "other").mean()),
    }


_STAT_ORDER = (
    "shops",
    "mean_error",
    "std_error",
    "cv_error",
    "min_error",
    "max_error",
    "shops_error_below_10",
    "shops_error_above_30",
    "shops_error_above_50",
    "min_goal_reached",
    "shops_goal_below_50",
    "shops_goal_below_70",
    "mean_other",
    "max_other",
    "other_share",
)


def error_distribution(variants: Mapping[str, pl.DataFrame]) -> pl.DataFrame:
    """Table 8: one row per statistic, one column per variant."""
    cols = {name: error_distribution_stats(df) for name, df in variants.items()}
    return pl.DataFrame(
        {
            "statistic": list(_STAT_ORDER),
            **{n: [c[k] for k in _STAT_ORDER] for n, c in cols.items()},
        }
    )


def _atc_events(df: pl.DataFrame) -> float:
    if "n_add_to_cart" in df.columns:
        return float(df["n_add_to_cart"].fill_null(0).sum())
    return float(df["add_to_cart"].cast(pl.Int64).sum())


def _per_shop_crash(df: pl.DataFrame) -> pl.DataFrame:
    return df.group_by("shop_id").agg((pl.col("outcome") == "crash").mean().alias("crash"))


def token_ablation(with_token: pl.DataFrame, without_token: pl.DataFrame) -> pl.DataFrame:
    """Table 9: metric, with token, without token, ratio (with / without). Crashes and goal
    reached over all runs (count and share), add-to-cart events, checkouts reached, actions
    per session over the runs that reached their goal, and shops with the higher crash rate
    (shops present in both)."""
    need = ("shop_id", "outcome", "add_to_cart", "checkout_reached", "n_actions")
    require_columns(with_token, need, "agent results (with token)")
    require_columns(without_token, need, "agent results (no token)")

    def figs(df: pl.DataFrame) -> dict[str, float]:
        n = max(df.height, 1)
        ok = df.filter(pl.col("outcome") == "goal_reached")
        crashes = float((df["outcome"] == "crash").sum())
        goals = float(ok.height)
        return {
            "runs": float(df.height),
            "crashes": crashes,
            "crash_share": crashes / n,
            "goal_reached": goals,
            "goal_reached_share": goals / n,
            "atc_events": _atc_events(df),
            "checkout_reached": float(df["checkout_reached"].cast(pl.Int64).sum()),
            "actions_per_session_ok": as_float(ok["n_actions"].mean()) if ok.height else math.nan,
        }

    w, wo = figs(with_token), figs(without_token)
    both = _per_shop_crash(with_token).join(
        _per_shop_crash(without_token), on="shop_id", suffix="_no"
    )
    w["shops_higher_crash"] = float((both["crash"] > both["crash_no"]).sum())
    wo["shops_higher_crash"] = float((both["crash_no"] > both["crash"]).sum())
    rows = []
    for k in w:
        a, b = w[k], wo[k]
        ratio = a / b if b and not (math.isnan(a) or math.isnan(b)) else math.nan
        rows.append({"metric": k, "with_token": a, "no_token": b, "ratio": ratio})
    return pl.DataFrame(rows)


def token_ablation_figures(table: pl.DataFrame) -> dict[str, float]:
    """`ablation_<metric>_with`, `ablation_<metric>_without`, `ablation_<metric>_ratio`."""
    out: dict[str, float] = {}
    for r in table.iter_rows(named=True):
        out[f"ablation_{r['metric']}_with"] = r["with_token"]
        out[f"ablation_{r['metric']}_without"] = r["no_token"]
        out[f"ablation_{r['metric']}_ratio"] = r["ratio"]
    return out


def paired_error_test(a: pl.DataFrame, b: pl.DataFrame) -> tuple[float, float]:
    """Paired t-test of per-shop error rates of two variants over the shops both ran (the
    paper: p = 0.72 two-stage vs single-stage); NaNs with fewer than two shared shops."""
    from scipy import stats

    j = per_shop_rates(a).join(per_shop_rates(b), on="shop_id", suffix="_b")
    if j.height < 2:
        return math.nan, math.nan
    x, y = j["error_rate"].to_numpy(), j["error_rate_b"].to_numpy()
    if np.all(x - y == (x - y)[0]):
        return math.nan, math.nan
    res = stats.ttest_rel(x, y)
    return float(res.statistic), float(res.pvalue)
