"""Confidence intervals by a hierarchical bootstrap, paired where policies are compared.

Agents are not independent draws: an agent's outcome depends on its cell (the shop and the
persona token it plays), and the cells of a shop share its catalogue. So a resample keeps the
design: every shop stays; within a shop its cells are drawn with replacement (as many as it
has), each drawn copy bringing its units (agents, or task runs). Redrawing the units inside
each copy as well (`BootstrapConfig.within_cells`) counts their noise twice — it is already
in the spread of the cell means — and over-covers (Davison & Hinkley 1997, §3.8; measured in
tests/test_bootstrap.py). A statistic is recomputed on each resample and the 95 % interval
is the 2.5th and 97.5th percentiles (percentile bootstrap; docs/evaluation.md).

Two policies are compared *paired*: their agents are the same people (one seed, one plan per
agent: same token, counterpart and session seed; `pair_key`), so one unit carries both
outcomes and both statistics are computed on the same resample. The interval of the
difference then leaves out everything the two runs share.

    index = CellIndex.of(shop, cell)                  # units in cells in shops
    draws = Draws.resample(index, BootstrapConfig())  # B resamples of the design
    point = Draws.original(index)                     # the data itself, once
    draws.copy_means(atc)                             # per cell copy: mean of a column

`Interval.verdict` reads an interval as yes / no / undecided against a smallest effect of
interest; `Interval.mdd` is the minimal detectable difference at 80 % power.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.sparse as sp

# 80 % power, two-sided α = 0.05: an effect of (z_0.975 + z_0.80)·SE is detected 80 % of
# the time. 1.95996 + 0.84162.
MDD_FACTOR = 2.8016
Verdict = Literal["yes", "no", "undecided"]


@dataclass(frozen=True)
class BootstrapConfig:
    n_resamples: int = 2000
    confidence: float = 0.95
    seed: int = 0
    # Also redraw the units inside each drawn cell. Off by default: the agents' own noise is
    # already in the spread of the cell means, and drawing it again counts it twice (a
    # nominal 95 % interval then covered a known effect in 99.5 % of seeded studies;
    # tests/test_bootstrap.py, docs/evaluation.md).
    within_cells: bool = False

    def __post_init__(self) -> None:
        if self.n_resamples < 2:
            raise ValueError(f"n_resamples must be at least 2, got {self.n_resamples}")
        if not 0.5 < self.confidence < 1.0:
            raise ValueError(f"confidence must lie in (0.5, 1), got {self.confidence}")


@dataclass(frozen=True)
class Interval:
    """A figure, its bootstrap interval and what it rests on."""

    estimate: float
    low: float
    high: float
    se: float  # the bootstrap standard deviation
    units: int  # agents (or runs) behind the figure
    cells: int  # their cells (shop × token, or tasks)
    resamples: int  # resamples with a defined statistic

    @property
    def mdd(self) -> float:
        """Minimal detectable difference: the effect a two-sided test at α = 0.05 finds with
        80 % power given this standard error (NaN when the SE is undefined)."""
        return MDD_FACTOR * self.se

    def excludes_zero(self) -> bool:
        return bool(self.low > 0 or self.high < 0)

    def verdict(self, smallest_effect: float) -> Verdict:
        """`yes`: the whole interval is above 0; `no`: the interval rules out every effect
        of at least `smallest_effect` (it lies below it); otherwise `undecided`."""
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            return "undecided"
        if self.low > 0:
            return "yes"
        if self.high < smallest_effect:
            return "no"
        return "undecided"

    def text(self, fmt: str = "{:+.3f}") -> str:
        """`+0.170 (95 % CI +0.120 to +0.220)`."""
        if not math.isfinite(self.estimate):
            return "undefined"
        ci = (
            f"95 % CI {fmt.format(self.low)} to {fmt.format(self.high)}"
            if math.isfinite(self.low)
            else "no CI"
        )
        return f"{fmt.format(self.estimate)} ({ci})"

    def as_figures(self, name: str) -> dict[str, float]:
        """`name`, `name_ci_low`, `name_ci_high`, `name_se`, `name_mdd`, `name_n`."""
        return {
            name: self.estimate,
            f"{name}_ci_low": self.low,
            f"{name}_ci_high": self.high,
            f"{name}_se": self.se,
            f"{name}_mdd": self.mdd,
            f"{name}_n": float(self.units),
        }


def interval(
    estimate: float,
    boot: np.ndarray,
    units: int,
    cells: int,
    confidence: float = 0.95,
    method: Literal["percentile", "basic"] = "percentile",
    bounds: tuple[float, float] = (-math.inf, math.inf),
) -> Interval:
    """Bootstrap interval from the finite statistics `boot` (NaN resamples, e.g. a stratum
    drawn without cells, are left out and counted). `percentile`: the tails of `boot`;
    `basic`: reflected about the estimate, [2θ̂ − q_high, 2θ̂ − q_low], for statistics whose
    plug-in estimate is biased by sampling noise, as a divergence near 0 is (the percentile
    interval of a JS divergence of 0 never contains 0; docs/evaluation.md). `bounds` clip
    the interval to the statistic's range."""
    b = np.asarray(boot, dtype=float)
    b = b[np.isfinite(b)]
    if b.size < 2 or not math.isfinite(estimate):
        return Interval(float(estimate), math.nan, math.nan, math.nan, units, cells, int(b.size))
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(b, [tail, 100 - tail])
    if method == "basic":
        low, high = 2 * estimate - high, 2 * estimate - low
    low, high = min(max(low, bounds[0]), bounds[1]), min(max(high, bounds[0]), bounds[1])
    return Interval(
        float(estimate), float(low), float(high), float(b.std(ddof=1)), units, cells, int(b.size)
    )


# ---- the resampling design -----------------------------------------------------------------
@dataclass(frozen=True)
class CellIndex:
    """Units grouped into cells, cells into shops: `unit_cell` (n_units,) the cell of each
    unit; `cell_shop` (n_cells,) the shop of each cell; `cells` (n_cells,) (shop, cell) keys
    in cell order (sorted); `sizes` units per cell."""

    unit_cell: np.ndarray
    cell_shop: np.ndarray
    cells: list[tuple[str, str]]
    sizes: np.ndarray

    @classmethod
    def of(cls, shop: Sequence | np.ndarray, cell: Sequence | np.ndarray) -> CellIndex:
        shop_a, cell_a = np.asarray(shop).astype(str), np.asarray(cell).astype(str)
        if shop_a.shape != cell_a.shape or shop_a.ndim != 1:
            raise ValueError("shop and cell must be 1-D and of one length (one entry per unit)")
        keys = np.char.add(np.char.add(shop_a, "\x1f"), cell_a)
        uniq, unit_cell = np.unique(keys, return_inverse=True)
        cells = [tuple(k.split("\x1f", 1)) for k in uniq.tolist()]
        _, cell_shop = np.unique([c[0] for c in cells], return_inverse=True)
        sizes = np.bincount(unit_cell, minlength=uniq.size)
        return cls(unit_cell.reshape(-1), np.asarray(cell_shop).reshape(-1), cells, sizes)


@dataclass(frozen=True)
class Draws:
    """Resampled copies of cells. Copy t belongs to resample `copy_b[t]` and is a copy of
    cell `copy_cell[t]`; `counts` (copies × units, sparse) says how often each unit of that
    cell was drawn into the copy. `original` has one resample holding every cell once with
    every unit once, so statistics computed on it are the point estimates."""

    n_resamples: int
    copy_b: np.ndarray  # (T,) int
    copy_cell: np.ndarray  # (T,) int
    counts: sp.csr_matrix  # (T, n_units)
    cell_sizes: np.ndarray  # (n_cells,) units per cell
    n_cells: int

    @property
    def n_units(self) -> int:
        return int(self.counts.shape[1])

    @classmethod
    def original(cls, index: CellIndex) -> Draws:
        unit_cell, sizes = index.unit_cell, index.sizes
        n = unit_cell.size
        counts = sp.csr_matrix(
            (np.ones(n), (unit_cell, np.arange(n))), shape=(sizes.size, n), dtype=np.float64
        )
        return cls(1, np.zeros(sizes.size, dtype=np.int64), np.arange(sizes.size), counts,
                   sizes, int(sizes.size))  # fmt: skip

    @classmethod
    def resample(cls, index: CellIndex, config: BootstrapConfig | None = None) -> Draws:
        """`config.n_resamples` hierarchical resamples: cells within shops, units within
        the drawn copies of cells (see the module docstring). Seeded."""
        cfg = config or BootstrapConfig()
        unit_cell, cell_shop, sizes = index.unit_cell, index.cell_shop, index.sizes
        rng = np.random.default_rng(cfg.seed)
        n_b = cfg.n_resamples
        members = np.argsort(unit_cell, kind="stable")  # units grouped by cell
        starts = np.concatenate([[0], np.cumsum(sizes)])
        copy_b, copy_cell = [], []
        for s in range(int(cell_shop.max()) + 1 if cell_shop.size else 0):
            cells = np.flatnonzero(cell_shop == s)
            picks = rng.integers(0, cells.size, size=(n_b, cells.size))  # (B, cells of s)
            copy_b.append(np.repeat(np.arange(n_b), cells.size))
            copy_cell.append(cells[picks.reshape(-1)])
        cb = np.concatenate(copy_b) if copy_b else np.zeros(0, dtype=np.int64)
        cc = np.concatenate(copy_cell) if copy_cell else np.zeros(0, dtype=np.int64)
        # Units within copies: all of the cell's units once, or (within_cells) as many drawn
        # uniformly with replacement.
        per_copy = sizes[cc]
        rows = np.repeat(np.arange(cc.size), per_copy)
        if cfg.within_cells:
            local = np.floor(rng.random(rows.size) * per_copy[rows]).astype(np.int64)
        else:
            local = np.arange(rows.size) - np.repeat(np.cumsum(per_copy) - per_copy, per_copy)
        cols = members[starts[cc][rows] + local]
        counts = sp.csr_matrix(
            (np.ones(rows.size), (rows, cols)), shape=(cc.size, unit_cell.size), dtype=np.float64
        )
        counts.sum_duplicates()
        return cls(n_b, cb, cc, counts, sizes, int(sizes.size))

    # ---- statistics on the copies ----------------------------------------------------------
    def copy_means(self, values: np.ndarray) -> np.ndarray:
        """(T,) mean of a per-unit column over each copy's drawn units."""
        v = np.asarray(values, dtype=np.float64)
        return (self.counts @ v) / self.cell_sizes[self.copy_cell]

    def group_means(self, copy_values: np.ndarray, cell_group: np.ndarray, n_groups: int):
        """(B, G): per resample, the mean of `copy_values` over the copies of cells in each
        group (cells count once per copy, as in an equal-weight mean of cells); NaN where a
        group has no copy."""
        g = np.asarray(cell_group)[self.copy_cell]
        ok = (g >= 0) & np.isfinite(copy_values)
        idx = self.copy_b[ok] * n_groups + g[ok]
        size = self.n_resamples * n_groups
        sums = np.bincount(idx, weights=copy_values[ok], minlength=size)
        cnts = np.bincount(idx, minlength=size)
        with np.errstate(invalid="ignore", divide="ignore"):
            out = sums / cnts
        return out.reshape(self.n_resamples, n_groups)

    def unit_weights(self) -> np.ndarray:
        """(B, n_units) dense: how often each unit was drawn in each resample."""
        agg = sp.csr_matrix(
            (np.ones(self.copy_b.size), (self.copy_b, np.arange(self.copy_b.size))),
            shape=(self.n_resamples, self.copy_b.size),
        )
        return np.asarray((agg @ self.counts).todense())


def weighted_ratio(weights: np.ndarray, num: np.ndarray, mask: np.ndarray | None = None):
    """(B,) Σ w·num / Σ w over the units in `mask` (NaN where no unit was drawn)."""
    w = weights if mask is None else weights[:, mask]
    x = num if mask is None else num[mask]
    with np.errstate(invalid="ignore", divide="ignore"):
        return (w @ x) / w.sum(axis=1)


def weighted_cohens_d(weights: np.ndarray, scores: np.ndarray, low: np.ndarray, high: np.ndarray):
    """(B,) Cohen's d (High − Low over the pooled SD with n − 1, as
    `separation.cohens_d`) of the resampled agents; NaN where a group has < 2 draws or the
    pooled SD is 0."""
    stats = []
    for m in (low, high):
        w = weights[:, m]
        x = scores[m]
        n = w.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = (w @ x) / n
            var = (w @ (x * x) - n * mean * mean) / (n - 1)
        stats.append((n, mean, np.maximum(var, 0.0)))
    (n1, m1, v1), (n2, m2, v2) = stats
    with np.errstate(invalid="ignore", divide="ignore"):
        pooled = ((n1 - 1) * v1 + (n2 - 1) * v2) / (n1 + n2 - 2)
        d = (m2 - m1) / np.sqrt(pooled)
    d[(n1 < 2) | (n2 < 2) | ~(pooled > 0)] = np.nan
    return d


def bootstrap_statistics(
    index: CellIndex,
    statistic: Callable[[Draws], dict[str, np.ndarray]],
    config: BootstrapConfig | None = None,
) -> dict[str, Interval]:
    """The intervals of the named statistics `statistic(draws) -> {name: (B,)}` under the
    hierarchical bootstrap of units in cells in shops (one set of resamples for all, so
    their differences are paired); each estimate is the statistic on the data itself."""
    cfg = config or BootstrapConfig()
    point = statistic(Draws.original(index))
    boot = statistic(Draws.resample(index, cfg))
    n, c = int(index.unit_cell.size), len(index.cells)
    return {
        k: interval(float(np.asarray(v).reshape(-1)[0]), boot[k], n, c, cfg.confidence)
        for k, v in point.items()
    }
