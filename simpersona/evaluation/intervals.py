"""Bootstrap intervals of the report's headline figures (`bootstrap.py` has the design).

* `ara_intervals`: stratified ARA correct, all-mismatch, random-mismatch and the
  differences correct − all-mismatch (`ara_diff`) and correct − random (`ara_diff_random`);
  units are agents, cells (shop, token), as Table 2.
* `separation_intervals`: Cohen's d (High − Low) per head, agents in (shop, token) cells.
* `paired_intervals`: two policies on the same agents (`pair_key`): each one's stratified ARA
  correct and purchase d, and their differences with one set of resamples.
* `rate_intervals`: shares and means of agent or task-run columns (instruction success by
  task kind with tasks as cells, Table 9's crash and goal-reached shares, …), optionally
  paired between two policies.

Every function returns flat `{name: Interval}`; `flat_figures` turns them into the report's
numbers (`name`, `name_ci_low`, `name_ci_high`, `name_se`, `name_mdd`, `name_n`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import polars as pl

from simpersona.evaluation.ara import ARAConfig, ara_cells, real_cells
from simpersona.evaluation.bootstrap import (
    BootstrapConfig,
    CellIndex,
    Draws,
    Interval,
    bootstrap_statistics,
    weighted_cohens_d,
    weighted_ratio,
)
from simpersona.evaluation.separation import HEADS, agent_scores, with_bins
from simpersona.evaluation.tables import agent_token_expr

# A difference in stratified ARA smaller than this is not worth having: a verdict of "no"
# means the interval rules out every effect this large (docs/evaluation.md).
ARA_SMALLEST_EFFECT = 0.05


def pair_key(agent_id: str, shop_id: str, policy: str) -> str:
    """The agent's identity across policies: its id without the policy
    (`plans.plan_agents` names agents `<shop>-<policy>-<seed>-<i>`; instruction runs
    `<shop>-<policy>-task-<task>-<repetition>`), so agent i of two policies run with one seed
    gets one key."""
    prefix = f"{shop_id}-{policy}-"
    rest = agent_id[len(prefix) :] if agent_id.startswith(prefix) else agent_id
    return f"{shop_id}:{rest}"


def with_pair_keys(agents: pl.DataFrame) -> pl.DataFrame:
    keys = [
        pair_key(a, s, p)
        for a, s, p in zip(agents["agent_id"], agents["shop_id"], agents["policy"], strict=True)
    ]
    return agents.with_columns(pl.Series("pair_key", keys, dtype=pl.String))


def flat_figures(intervals: Mapping[str, Interval]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, iv in intervals.items():
        out |= iv.as_figures(name)
    return out


def _paired_units(
    agents_by_policy: Mapping[str, pl.DataFrame], columns: Sequence[str]
) -> pl.DataFrame:
    """One row per agent present in every policy: pair_key, shop_id, token, and
    `<column>__<policy>` for each column. Raises when the policies' agents disagree on the
    token they play (they are then not the same people)."""
    joined: pl.DataFrame | None = None
    for p, a in agents_by_policy.items():
        a = with_pair_keys(a.with_columns(agent_token_expr(a).cast(pl.Int64)))
        part = a.select(
            "pair_key", "shop_id", pl.col("token").alias(f"token__{p}"),
            *[pl.col(c).alias(f"{c}__{p}") for c in columns],
        )  # fmt: skip
        if joined is None:
            joined = part
        else:
            joined = joined.join(part.drop("shop_id"), on="pair_key", how="inner")
    assert joined is not None
    names = list(agents_by_policy)
    first = f"token__{names[0]}"
    for p in names[1:]:
        bad = joined.filter(pl.col(first).ne_missing(pl.col(f"token__{p}")))
        if bad.height:
            raise ValueError(
                f"policies {names[0]} and {p} are not paired: agent {bad['pair_key'][0]} plays "
                f"token {bad[first][0]} in one and {bad[f'token__{p}'][0]} in the other "
                "(run them with one seed and one plan)"
            )
    return joined.rename({first: "token"}).drop([f"token__{p}" for p in names[1:]])


# ---- Action Rate Alignment -----------------------------------------------------------------
def _ara_statistic(
    units: pl.DataFrame,
    index: CellIndex,
    real: pl.DataFrame,
    policies: Sequence[str],
    cfg: ARAConfig,
):
    """The statistic function of `ara_intervals` / `paired_intervals` (see there)."""
    first_pur = pl.col(f"pur__{policies[0]}")
    cells = ara_cells(
        real,
        units.select(
            "shop_id", "token", pl.lit("").alias("stratum"), pl.lit("x").alias("outcome"),
            pl.col(f"atc__{policies[0]}").alias("add_to_cart"),
            first_pur.alias("purchase"), first_pur.alias("checkout_reached"),
        ),
        ARAConfig(pur=cfg.pur, strata=cfg.strata, min_real=cfg.min_real, seed=cfg.seed),
    )  # fmt: skip
    by_cell = {(r["shop_id"], str(r["token"])): r for r in cells.iter_rows(named=True)}
    rc = real_cells(real.with_columns(pl.col("token").cast(pl.Int64)), cfg)
    cand = {s: rc.filter(pl.col("shop_id") == s) for s in rc["shop_id"].unique().to_list()}
    n = len(index.cells)
    real_a, real_p = np.full(n, np.nan), np.full(n, np.nan)
    rand_a, rand_p = np.full(n, np.nan), np.full(n, np.nan)
    group = np.full(n, -1, dtype=np.int64)
    cands: list[tuple[np.ndarray, np.ndarray]] = []
    for k, (shop, token) in enumerate(index.cells):
        r = by_cell[(shop, token)]
        real_a[k], real_p[k] = r["atc_real"], r["pur_real"]
        if r["stratum"] in cfg.strata:
            group[k] = cfg.strata.index(r["stratum"])
        others = cand[shop].filter(pl.col("token") != int(token))
        cands.append((others["atc_real"].to_numpy(), others["pur_real"].to_numpy()))
        if r["rand_token"] is not None:
            o = others.filter(pl.col("token") == r["rand_token"])
            rand_a[k], rand_p[k] = o["atc_real"][0], o["pur_real"][0]
    cols = {
        p: (units[f"atc__{p}"].cast(pl.Float64).to_numpy(),
            units[f"pur__{p}"].cast(pl.Float64).to_numpy())
        for p in policies
    }  # fmt: skip
    n_groups = len(cfg.strata)

    def stratified(draws: Draws, values: np.ndarray) -> np.ndarray:
        g = draws.group_means(values, group, n_groups)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a resample without any stratum
            return np.nanmean(g, axis=1)

    def statistic(draws: Draws) -> dict[str, np.ndarray]:
        c = draws.copy_cell
        order = np.argsort(c, kind="stable")
        bounds = np.searchsorted(c[order], np.arange(n + 1))
        out: dict[str, np.ndarray] = {}
        for p, (atc, pur) in cols.items():
            ra, rp = draws.copy_means(atc), draws.copy_means(pur)
            correct = 1 - 0.5 * np.abs(ra - real_a[c]) - 0.5 * np.abs(rp - real_p[c])
            rand = 1 - 0.5 * np.abs(ra - rand_a[c]) - 0.5 * np.abs(rp - rand_p[c])
            allm = np.full(c.size, np.nan)
            for k in range(n):
                idx = order[bounds[k] : bounds[k + 1]]
                ca, cp = cands[k]
                if idx.size and ca.size:
                    allm[idx] = (
                        1
                        - 0.5 * np.abs(ra[idx, None] - ca[None, :]).mean(axis=1)
                        - 0.5 * np.abs(rp[idx, None] - cp[None, :]).mean(axis=1)
                    )
            s_c, s_a, s_r = (
                stratified(draws, correct),
                stratified(draws, allm),
                stratified(draws, rand),
            )
            out |= {
                f"ara_correct_{p}": s_c,
                f"ara_all_mismatch_{p}": s_a,
                f"ara_random_mismatch_{p}": s_r,
                f"ara_diff_{p}": s_c - s_a,
                f"ara_diff_random_{p}": s_c - s_r,
            }
        return out

    return statistic


def _ara_units(
    real: pl.DataFrame, agents_by_policy: Mapping[str, pl.DataFrame], cfg: ARAConfig
) -> pl.DataFrame:
    """Agents (paired across policies) in the (shop, token) cells that have `min_real` real
    buyers: pair_key, shop_id, token, `atc__<policy>`, `pur__<policy>`."""
    pur = "purchase" if cfg.pur == "purchase" else "checkout_reached"
    kept = {}
    for p, a in agents_by_policy.items():
        if cfg.exclude_outcomes:
            a = a.filter(~pl.col("outcome").is_in(list(cfg.exclude_outcomes)))
        kept[p] = a.rename({"add_to_cart": "atc", pur: "pur"})
    units = _paired_units(kept, ("atc", "pur")).filter(pl.col("token").is_not_null())
    rc = real_cells(real.with_columns(pl.col("token").cast(pl.Int64)), cfg)
    units = units.join(rc.select("shop_id", "token"), on=["shop_id", "token"], how="semi")
    if cfg.min_agents > 1:
        units = units.filter(pl.len().over("shop_id", "token") >= cfg.min_agents)
    return units.sort("pair_key")


def ara_intervals(
    real: pl.DataFrame,
    agents_by_policy: Mapping[str, pl.DataFrame],
    config: ARAConfig | None = None,
    boot: BootstrapConfig | None = None,
) -> dict[str, Interval]:
    """Per policy P (one set of resamples over agents in (shop, token) cells; two or more
    policies are paired, their agents matched by `pair_key`): `ara_correct_P`,
    `ara_all_mismatch_P`, `ara_random_mismatch_P`, `ara_diff_P` (correct − all-mismatch),
    `ara_diff_random_P`. The estimates equal `ara_figures` on the same agents."""
    cfg = config or ARAConfig()
    units = _ara_units(real, agents_by_policy, cfg)
    if units.height == 0:
        return {}
    index = CellIndex.of(units["shop_id"].to_numpy(), units["token"].cast(pl.String).to_numpy())
    stat = _ara_statistic(units, index, real, list(agents_by_policy), cfg)
    return bootstrap_statistics(index, stat, boot)


# ---- separation ----------------------------------------------------------------------------
def _separation_units(
    agents_by_policy: Mapping[str, pl.DataFrame], bins: pl.DataFrame
) -> pl.DataFrame:
    scored = {}
    for p, a in agents_by_policy.items():
        s = with_bins(agent_scores(a), bins)
        scored[p] = s.with_columns(
            [pl.col(f"{h}_bin").cast(pl.Int64).fill_null(-1) for h in HEADS if f"{h}_bin" in s.columns]
        )  # fmt: skip
    cols = [f"{h}_score" for h in HEADS]
    units = _paired_units(scored, cols)
    # Bins belong to the token, the same for every policy of a pair.
    first = next(iter(scored.values()))
    bin_cols = [f"{h}_bin" for h in HEADS if f"{h}_bin" in first.columns]
    binned = with_bins(units, bins).select(
        "pair_key", *[pl.col(c).cast(pl.Int64).fill_null(-1) for c in bin_cols]
    )
    return (
        units.join(binned, on="pair_key", how="left")
        .filter(pl.col("token").is_not_null())
        .sort("pair_key")
    )


def _separation_statistic(units: pl.DataFrame, policies: Sequence[str]):
    masks = {}
    for h in HEADS:
        b = units[f"{h}_bin"].to_numpy() if f"{h}_bin" in units.columns else None
        masks[h] = b
    scores = {
        (p, h): units[f"{h}_score__{p}"].cast(pl.Float64).fill_null(np.nan).to_numpy()
        for p in policies
        for h in HEADS
    }

    def statistic(draws: Draws) -> dict[str, np.ndarray]:
        w = draws.unit_weights()
        out = {}
        for (p, h), x in scores.items():
            b = masks[h]
            if b is None:
                out[f"{h}_cohens_d_{p}"] = np.full(draws.n_resamples, np.nan)
                continue
            ok = np.isfinite(x)
            xs = np.where(ok, x, 0.0)
            out[f"{h}_cohens_d_{p}"] = weighted_cohens_d(w, xs, ok & (b == 0), ok & (b == 2))
        return out

    return statistic


def separation_intervals(
    agents_by_policy: Mapping[str, pl.DataFrame],
    bins: pl.DataFrame,
    boot: BootstrapConfig | None = None,
) -> dict[str, Interval]:
    """`<head>_cohens_d_P` per policy P and head (purchase, engagement, exploration), agents
    resampled in (shop, token) cells; paired across policies as `ara_intervals`."""
    units = _separation_units(agents_by_policy, bins)
    if units.height == 0:
        return {}
    index = CellIndex.of(units["shop_id"].to_numpy(), units["token"].cast(pl.String).to_numpy())
    return bootstrap_statistics(index, _separation_statistic(units, list(agents_by_policy)), boot)


# ---- two policies on the same agents ---------------------------------------------------------
def paired_intervals(
    real: pl.DataFrame,
    a: pl.DataFrame,
    b: pl.DataFrame,
    bins: pl.DataFrame,
    names: tuple[str, str],
    config: ARAConfig | None = None,
    boot: BootstrapConfig | None = None,
) -> dict[str, Interval]:
    """Policy a against policy b on the agents both ran (matched by `pair_key`): the
    differences a − b of stratified ARA correct (`ara_correct_gap_<a>_<b>`), of correct −
    all-mismatch (`ara_diff_gap_<a>_<b>`) and of the purchase Cohen's d
    (`purchase_d_gap_<a>_<b>`), each with its paired interval."""
    pa, pb = names
    both = {pa: a, pb: b}
    out: dict[str, Interval] = {}
    cfg = config or ARAConfig()
    units = _ara_units(real, both, cfg)
    if units.height:
        index = CellIndex.of(units["shop_id"].to_numpy(), units["token"].cast(pl.String).to_numpy())
        stat = _ara_statistic(units, index, real, [pa, pb], cfg)

        def gaps(draws: Draws) -> dict[str, np.ndarray]:
            s = stat(draws)
            return {
                f"ara_correct_gap_{pa}_{pb}": s[f"ara_correct_{pa}"] - s[f"ara_correct_{pb}"],
                f"ara_diff_gap_{pa}_{pb}": s[f"ara_diff_{pa}"] - s[f"ara_diff_{pb}"],
            }

        out |= bootstrap_statistics(index, gaps, boot)
    sep = _separation_units(both, bins)
    if sep.height:
        index = CellIndex.of(sep["shop_id"].to_numpy(), sep["token"].cast(pl.String).to_numpy())
        sstat = _separation_statistic(sep, [pa, pb])

        def d_gap(draws: Draws) -> dict[str, np.ndarray]:
            s = sstat(draws)
            return {
                f"purchase_d_gap_{pa}_{pb}": s[f"purchase_cohens_d_{pa}"]
                - s[f"purchase_cohens_d_{pb}"]
            }

        out |= bootstrap_statistics(index, d_gap, boot)
    return out


# ---- shares and means of any column -----------------------------------------------------------
def rate_intervals(
    rows_by_policy: Mapping[str, pl.DataFrame],
    measures: Mapping[str, tuple[str, str | None]],
    cell: str = "token",
    boot: BootstrapConfig | None = None,
    difference: tuple[str, str] | None = None,
) -> dict[str, Interval]:
    """Means of numeric or boolean columns, rows resampled in (shop, `cell`) cells, per
    policy as `<name>_<policy>`. `measures`: name → (column, filter column or None): the mean
    of `column` over the rows where the boolean `filter` is true (e.g. actions per session
    over the runs that reached their goal). With two or more policies the rows are paired
    by `pair_key`; `difference=(a, b)` adds `<name>_gap_<a>_<b>` = a − b."""
    cols = {c for c, _ in measures.values()} | {f for _, f in measures.values() if f}
    if cell != "token":
        cols.add(cell)
    prepared = {
        p: r.with_columns(agent_token_expr(r)) if cell == "token" else r
        for p, r in rows_by_policy.items()
    }
    units = _paired_units(prepared, sorted(cols - {"token"})).sort("pair_key")
    if units.height == 0:
        return {}
    policies = list(rows_by_policy)
    cell_values = (
        units["token"] if cell == "token" else units[f"{cell}__{policies[0]}"]
    ).cast(pl.String).fill_null("none")  # fmt: skip
    index = CellIndex.of(units["shop_id"].to_numpy(), cell_values.to_numpy())

    def column(name: str, p: str) -> np.ndarray:
        return units[f"{name}__{p}"].cast(pl.Float64).fill_null(np.nan).to_numpy()

    def statistic(draws: Draws) -> dict[str, np.ndarray]:
        w = draws.unit_weights()
        out = {}
        for name, (col, filt) in measures.items():
            for p in policies:
                x = column(col, p)
                mask = np.isfinite(x)
                if filt is not None:
                    mask &= column(filt, p) > 0.5
                out[f"{name}_{p}"] = weighted_ratio(w, np.where(mask, x, 0.0), mask)
            if difference is not None:
                a, b = difference
                out[f"{name}_gap_{a}_{b}"] = out[f"{name}_{a}"] - out[f"{name}_{b}"]
        return out

    return bootstrap_statistics(index, statistic, boot)


def verdict_sentence(name: str, iv: Interval | None, smallest: float, what: str) -> str:
    """`yes`/`no`/`undecided` with the figure, its CI and sample size, in one phrase."""
    if iv is None or not math.isfinite(iv.estimate):
        return f"{name}: not measured"
    return (
        f"{name}: **{iv.verdict(smallest)}**, {what} {iv.text()}, "
        f"{iv.units} paired agents in {iv.cells} cells"
    )
