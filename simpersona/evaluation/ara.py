"""Action Rate Alignment (paper §3.2, Table 2).

Per (shop, token) cell: ATC = share of buyers (agents) with an add-to-cart, PUR = share with
a purchase (our reading; the paper's text says "checkout fractions": `ARAConfig.pur="checkout"`);

    ATC align = 1 − |ATC_real − ATC_agent|,  PUR align = 1 − |PUR_real − PUR_agent|,
    ARA = 0.5·ATC align + 0.5·PUR align.

Pairings: *correct* (agents of token a vs real buyers of a on that shop), *all-mismatch*
(the same agents vs real buyers of every other token b ≠ a on that shop, the alignment
averaged over b) and *1-random-mismatch* (one b ≠ a drawn with a seeded generator).

Stratification. A cell's stratum is its token's funnel stratum on that shop: the modal
stratum of the token's real buyers there (ties: the earlier letter). Per stratum, the cells
are averaged with equal weight; the *stratified* figure is the unweighted mean of the
per-stratum values over `ARAConfig.strata` (A–D by default, as Table 2). This reproduces
the paper's arithmetic: its stratified row is exactly the mean of its A–D rows
(.787 = mean(.724, .748, .721, .954)). The alternative reading, cells (shop, token,
stratum) compared within a stratum (`stratum_of="agent"`: the agent's own `stratum`
column, real buyers of that token in that stratum), is available but nearly degenerate:
within stratum D every real buyer has ATC = PUR = 0, so correct and mismatch coincide.

Cells need `min_real` real buyers and `min_agents` agents; mismatch candidates need
`min_real` real buyers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, overload

import numpy as np
import polars as pl

from simpersona.evaluation.tables import (
    REAL_COLUMNS,
    STRATA,
    agent_token_expr,
    require_columns,
)

PAIRINGS: tuple[str, ...] = ("correct", "all", "rand")


@dataclass(frozen=True)
class ARAConfig:
    """How cells are formed and filtered."""

    pur: Literal["purchase", "checkout"] = "purchase"
    stratum_of: Literal["token", "agent"] = "token"
    strata: tuple[str, ...] = ("A", "B", "C", "D")  # averaged into the stratified figure
    min_real: int = 5
    min_agents: int = 1
    exclude_outcomes: tuple[str, ...] = ()  # e.g. ("crash",) to leave crashed agents out
    seed: int = 0


@overload
def align(real: float, agent: float) -> float: ...
@overload
def align(real: np.ndarray, agent: np.ndarray) -> np.ndarray: ...
def align(real: float | np.ndarray, agent: float | np.ndarray) -> float | np.ndarray:
    """1 − |real − agent|: 1 for identical rates, 0 for opposite ones (0 vs 1)."""
    return 1.0 - np.abs(np.asarray(real, dtype=float) - np.asarray(agent, dtype=float))


def ara_value(atc_real: float, pur_real: float, atc_agent: float, pur_agent: float) -> float:
    """ARA of one pairing: the mean of the ATC and PUR alignments."""
    return float(0.5 * align(atc_real, atc_agent) + 0.5 * align(pur_real, pur_agent))


def _modal_stratum(real: pl.DataFrame) -> pl.DataFrame:
    return (
        real.group_by("shop_id", "token", "stratum")
        .agg(pl.len().alias("n"))
        .sort(["shop_id", "token", "n", "stratum"], descending=[False, False, True, False])
        .group_by("shop_id", "token", maintain_order=True)
        .first()
        .select("shop_id", "token", "stratum")
    )


def real_cells(real: pl.DataFrame, cfg: ARAConfig) -> pl.DataFrame:
    """Real (shop, token) cells with at least `min_real` buyers: n_real, atc_real, pur_real
    and the cell's stratum."""
    pur = "purchase" if cfg.pur == "purchase" else "checkout"
    keys = ["shop_id", "token"] + (["stratum"] if cfg.stratum_of == "agent" else [])
    cells = real.group_by(keys).agg(
        pl.len().alias("n_real"),
        pl.col("atc").cast(pl.Float64).mean().alias("atc_real"),
        pl.col(pur).cast(pl.Float64).mean().alias("pur_real"),
    )
    if cfg.stratum_of == "token":
        cells = cells.join(_modal_stratum(real), on=["shop_id", "token"], how="left")
    return cells.filter(pl.col("n_real") >= cfg.min_real)


def _agent_cells(agents: pl.DataFrame, cfg: ARAConfig) -> pl.DataFrame:
    pur = "purchase" if cfg.pur == "purchase" else "checkout_reached"
    a = agents.with_columns(agent_token_expr(agents)).filter(pl.col("token").is_not_null())
    if cfg.exclude_outcomes:
        a = a.filter(~pl.col("outcome").is_in(list(cfg.exclude_outcomes)))
    keys = ["shop_id", "token"] + (["stratum"] if cfg.stratum_of == "agent" else [])
    return (
        a.with_columns(pl.col("token").cast(pl.Int64))
        .group_by(keys)
        .agg(
            pl.len().alias("n_agents"),
            pl.col("add_to_cart").cast(pl.Float64).mean().alias("atc_agent"),
            pl.col(pur).cast(pl.Float64).mean().alias("pur_agent"),
        )
        .filter(pl.col("n_agents") >= cfg.min_agents)
    )


def ara_cells(
    real: pl.DataFrame, agents: pl.DataFrame, config: ARAConfig | None = None
) -> pl.DataFrame:
    """One row per (shop, token) cell with real and agent rates and the ATC/PUR/ARA
    alignments of the three pairings (`*_correct`, `*_all`, `*_rand`, plus `rand_token`
    and `n_mismatch`, the number of other tokens averaged). Agents of one policy."""
    cfg = config or ARAConfig()
    require_columns(real, REAL_COLUMNS, "real buyers")
    require_columns(agents, ("shop_id", "token", "add_to_cart", "checkout_reached", "purchase",
                             "outcome", "stratum"), "agent results")  # fmt: skip
    real = real.with_columns(pl.col("token").cast(pl.Int64))
    rc = real_cells(real, cfg)
    ac = _agent_cells(agents, cfg)
    join_keys = ["shop_id", "token"] + (["stratum"] if cfg.stratum_of == "agent" else [])
    cells = ac.join(rc, on=join_keys, how="inner").sort(join_keys)
    schema_extra = {
        f"{m}_{p}": pl.Float64 for p in PAIRINGS for m in ("atc_align", "pur_align", "ara")
    }
    if cells.height == 0:
        return cells.with_columns(
            [pl.lit(None, dtype=t).alias(c) for c, t in schema_extra.items()]
            + [
                pl.lit(None, dtype=pl.Int64).alias("rand_token"),
                pl.lit(0, dtype=pl.Int64).alias("n_mismatch"),
            ]  # fmt: skip
        )
    atc_c = align(cells["atc_real"].to_numpy(), cells["atc_agent"].to_numpy())
    pur_c = align(cells["pur_real"].to_numpy(), cells["pur_agent"].to_numpy())

    # Mismatch candidates: real cells on the same shop (same stratum when within-stratum)
    # with another token.
    cand_keys = ["shop_id"] + (["stratum"] if cfg.stratum_of == "agent" else [])
    rc_m = rc.select(*cand_keys, pl.col("token").alias("b"), "atc_real", "pur_real")
    pairs = (
        cells.with_row_index("cell")
        .select("cell", *cand_keys, "token", "atc_agent", "pur_agent")
        .join(rc_m, on=cand_keys, how="inner")
        .filter(pl.col("b") != pl.col("token"))
        .with_columns(
            (1 - (pl.col("atc_real") - pl.col("atc_agent")).abs()).alias("atc_al"),
            (1 - (pl.col("pur_real") - pl.col("pur_agent")).abs()).alias("pur_al"),
        )
        .sort("cell", "b")
    )
    n = cells.height
    allm = pairs.group_by("cell").agg(
        pl.len().alias("n_mismatch"), pl.col("atc_al").mean(), pl.col("pur_al").mean()
    )
    atc_all, pur_all, n_mis = np.full(n, np.nan), np.full(n, np.nan), np.zeros(n, dtype=np.int64)
    idx = allm["cell"].to_numpy()
    atc_all[idx], pur_all[idx] = allm["atc_al"].to_numpy(), allm["pur_al"].to_numpy()
    n_mis[idx] = allm["n_mismatch"].to_numpy()

    # 1-random mismatch: cells in sorted order, one uniform draw each among their candidates.
    rng = np.random.default_rng(cfg.seed)
    atc_r, pur_r = np.full(n, np.nan), np.full(n, np.nan)
    rand_tok = np.full(n, -1, dtype=np.int64)
    cell_ids = pairs["cell"].to_numpy()
    starts = np.searchsorted(cell_ids, np.arange(n), side="left")
    ends = np.searchsorted(cell_ids, np.arange(n), side="right")
    pa, pp, pb = pairs["atc_al"].to_numpy(), pairs["pur_al"].to_numpy(), pairs["b"].to_numpy()
    for i in range(n):
        if ends[i] > starts[i]:
            j = starts[i] + int(rng.integers(ends[i] - starts[i]))
            atc_r[i], pur_r[i], rand_tok[i] = pa[j], pp[j], pb[j]

    return cells.with_columns(
        pl.Series("atc_align_correct", atc_c),
        pl.Series("pur_align_correct", pur_c),
        pl.Series("ara_correct", 0.5 * atc_c + 0.5 * pur_c),
        pl.Series("atc_align_all", atc_all).fill_nan(None),
        pl.Series("pur_align_all", pur_all).fill_nan(None),
        pl.Series("ara_all", 0.5 * atc_all + 0.5 * pur_all).fill_nan(None),
        pl.Series("atc_align_rand", atc_r).fill_nan(None),
        pl.Series("pur_align_rand", pur_r).fill_nan(None),
        pl.Series("ara_rand", 0.5 * atc_r + 0.5 * pur_r).fill_nan(None),
        pl.Series("rand_token", rand_tok).replace(-1, None),
        pl.Series("n_mismatch", n_mis),
    )


_METRICS = ("atc_align", "pur_align", "ara")


def ara_table(cells: pl.DataFrame, config: ARAConfig | None = None) -> pl.DataFrame:
    """Table 2: per stratum (cells averaged with equal weight) the ATC, PUR and ARA
    alignments of the three pairings, then a `Stratified` row (the unweighted mean of the
    strata in `config.strata` that have cells) and a `Pooled` row (all cells)."""
    cfg = config or ARAConfig()
    cols = [f"{m}_{p}" for m in _METRICS for p in PAIRINGS]
    rows: list[dict[str, Any]] = []
    for s in STRATA:
        sub = cells.filter(pl.col("stratum") == s)
        if sub.height == 0:
            continue
        rows.append({"stratum": s, "cells": sub.height, **{c: sub[c].mean() for c in cols}})
    strat = [r for r in rows if r["stratum"] in cfg.strata]
    mean = lambda vals: float(np.mean(vals)) if vals else None  # noqa: E731
    rows.append(
        {
            "stratum": "Stratified",
            "cells": sum(r["cells"] for r in strat),
            **{c: mean([r[c] for r in strat if r[c] is not None]) for c in cols},
        }
    )
    rows.append({"stratum": "Pooled", "cells": cells.height, **{c: cells[c].mean() for c in cols}})
    schema = {"stratum": pl.Utf8, "cells": pl.Int64, **{c: pl.Float64 for c in cols}}
    return pl.DataFrame(rows, schema=schema)


def ara_figures(table: pl.DataFrame) -> dict[str, float]:
    """Flat figures from an `ara_table`: `ara_correct`, `ara_all_mismatch`,
    `ara_random_mismatch` (stratified), the ATC/PUR alignments, the per-stratum correct ARA
    (`ara_correct_A` …) and `ara_cells`. NaN where there are no cells."""

    def get(row: str, col: str) -> float:
        sub = table.filter(pl.col("stratum") == row)
        v = sub[col][0] if sub.height else None
        return float(v) if v is not None else math.nan

    out = {
        "ara_correct": get("Stratified", "ara_correct"),
        "ara_all_mismatch": get("Stratified", "ara_all"),
        "ara_random_mismatch": get("Stratified", "ara_rand"),
        "atc_align_correct": get("Stratified", "atc_align_correct"),
        "pur_align_correct": get("Stratified", "pur_align_correct"),
        "ara_pooled_correct": get("Pooled", "ara_correct"),
        "ara_cells": float(get("Pooled", "cells")) if table.height else 0.0,
    }
    for s in STRATA:
        out[f"ara_correct_{s}"] = get(s, "ara_correct")
        out[f"ara_all_mismatch_{s}"] = get(s, "ara_all")
    return out


def action_rate_alignment(
    real: pl.DataFrame, agents: pl.DataFrame, config: ARAConfig | None = None
) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, float]]:
    """`(cells, table, figures)` for one policy's agents: `ara_cells`, `ara_table`,
    `ara_figures`."""
    cfg = config or ARAConfig()
    cells = ara_cells(real, agents, cfg)
    table = ara_table(cells, cfg)
    return cells, table, ara_figures(table)
