"""Plots of population recovery (paper App. B): the stratum mix per store, real against
recovered from p̂_s, and the feature means; drawn on matplotlib's object API (no pyplot)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from simpersona.personas.distribution import (
    HEADLINE_FEATURES,
    JS_GOOD,
    FeatureRecovery,
    StratumRecovery,
)


def _log_height(x: float | np.ndarray) -> np.ndarray:
    return np.log1p(100.0 * np.asarray(x, dtype=np.float64))


def plot_stratum_recovery(
    rec: StratumRecovery,
    path: str | os.PathLike[str],
    stores_per_row: int = 21,
    title: str | None = None,
    dpi: int = 120,
) -> Path:
    """Paper Fig. 6: per store (largest first), for each stratum a solid bar (real share) and
    a hatched bar (recovered share); heights log(1 + 100x) so rare strata stay visible. Each
    store is labelled with its JS divergence. Written as a PNG; returns the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    order = list(rec.strata)
    stores = rec.stores.sort(["n_buyers", "shop_id"], descending=[True, False])
    shop_list = stores["shop_id"].to_list()
    js = dict(zip(stores["shop_id"].to_list(), stores["js"].to_list(), strict=True))
    mix = {
        (r["shop_id"], r["stratum"]): (r["real"], r["recovered"])
        for r in rec.mix.iter_rows(named=True)
    }
    # Strata with no buyer anywhere (e.g. E in a training set) are left out of the plot.
    shown = [t for t in order if any(mix[(s, t)][0] > 0 or mix[(s, t)][1] > 0 for s in shop_list)]
    shown = shown or order
    n_rows = max(1, math.ceil(len(shop_list) / stores_per_row))
    per_row = min(stores_per_row, max(len(shop_list), 1))
    fig = Figure(figsize=(max(6.0, 0.55 * per_row * max(len(shown), 2) / 2 + 1.5), 3.0 * n_rows))
    FigureCanvasAgg(fig)
    axes = fig.subplots(n_rows, 1, squeeze=False)[:, 0]
    colors = {t: f"C{i}" for i, t in enumerate(order)}
    group = 0.8
    w = group / (2 * len(shown))
    ticks_x = np.array([0.01, 0.05, 0.2, 0.5, 1.0])
    for r, ax in enumerate(axes):
        chunk = shop_list[r * stores_per_row : (r + 1) * stores_per_row]
        base = np.arange(len(chunk)) - group / 2
        for j, t in enumerate(shown):
            real = np.array([mix[(shop, t)][0] for shop in chunk])
            recov = np.array([mix[(shop, t)][1] for shop in chunk])
            x0 = base + 2 * j * w
            ax.bar(x0 + w / 2, _log_height(real), w, color=colors[t], edgecolor=colors[t])
            ax.bar(
                x0 + 1.5 * w,
                _log_height(recov),
                w,
                facecolor="white",
                edgecolor=colors[t],
                hatch="////",
                linewidth=0.6,
            )
        ax.set_xticks(range(len(chunk)))
        ax.set_xticklabels(
            [f"{s}\nJS={js[s]:.3f}" for s in chunk],
            fontsize=6,
            rotation=90 if len(chunk) > 8 else 0,
        )
        ax.set_xlim(-0.6, max(len(chunk), 1) - 0.4)
        ax.set_yticks(_log_height(ticks_x))
        ax.set_yticklabels([f"{100 * v:g} %" for v in ticks_x], fontsize=7)
        ax.set_ylim(0, _log_height(1.0) * 1.05)
        ax.set_ylabel("share, log(1+100x)", fontsize=7)
    from matplotlib.patches import Patch

    handles = [Patch(color=colors[t], label=f"stratum {t}") for t in shown] + [
        Patch(facecolor="white", edgecolor="black", label="real (solid)"),
        Patch(facecolor="white", edgecolor="black", hatch="////", label="recovered (hatched)"),
    ]
    axes[0].legend(handles=handles, fontsize=6, ncol=len(handles), loc="upper right")
    s = rec.summary
    axes[0].set_title(
        title
        or (
            f"Stratum recovery: JS mean {s['js_mean']:.3f}, median {s['js_median']:.3f}, "
            f"{s['js_under_0_10']}/{s['n_stores']} stores < {JS_GOOD:.2f}"
        ),
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    return path


def plot_feature_recovery(
    rec: FeatureRecovery,
    path: str | os.PathLike[str],
    features: Sequence[str] = HEADLINE_FEATURES,
    dpi: int = 120,
) -> Path:
    """Paper Fig. 7: one scatter per feature of the real store means (x) against the
    token-weighted reconstruction (y), with the identity line and R² in the title. Features
    not in `rec` are skipped. Written as a PNG; returns the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    present = set(rec.stores["feature"].unique().to_list())
    feats = [f for f in features if f in present] or sorted(present)[:4]
    n_cols = min(2, max(len(feats), 1))
    n_rows = max(1, math.ceil(len(feats) / n_cols))
    fig = Figure(figsize=(4.2 * n_cols, 3.8 * n_rows))
    FigureCanvasAgg(fig)
    axes = fig.subplots(n_rows, n_cols, squeeze=False).reshape(-1)
    for ax, f in zip(axes, feats, strict=False):
        d = rec.stores.filter(pl.col("feature") == f)
        real = d["real"].to_numpy()
        recon = d["reconstructed"].to_numpy()
        size = d["n_buyers"].to_numpy().astype(np.float64)
        ax.scatter(real, recon, s=12 + 60 * np.sqrt(size / max(size.max(), 1)), alpha=0.7)
        lo = float(min(real.min(), recon.min())) if real.size else 0.0
        hi = float(max(real.max(), recon.max())) if real.size else 1.0
        pad = 0.05 * (hi - lo or 1.0)
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="grey", lw=0.8, ls="--")
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_ylim(lo - pad, hi + pad)
        r2 = rec.r2.get(f, float("nan"))
        ax.set_title(f"{f}: R² = {r2:.3f}", fontsize=9)
        ax.set_xlabel("real store mean", fontsize=8)
        ax.set_ylabel("token-weighted reconstruction", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes[len(feats) :]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    return path
