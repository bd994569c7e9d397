"""Population recovery across stores (paper App. B), for the persona tokens and the k-means
clusters side by side: held-out figures (P(stratum | k) and token centroids from the training
stores only, bootstrap intervals over stores), the paper's in-sample reading as a labelled
extra, per-store JS divergences and the Fig. 6/7 plots."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from simpersona.lake import atomic_write_text
from simpersona.personas.codebook_fit import finite_numbers


@dataclass
class Recovery:
    figures: dict[str, Any]  # flat: held-out, `_insample` and `kmeans_` figures, the note
    stores: pl.DataFrame  # per store: n_buyers, js_insample/js_heldout (both code kinds), split
    note: str = ""
    plots: dict[str, Path] = field(default_factory=dict)


def population_recovery(
    assign: pl.DataFrame,
    raw: Any,
    train_shops: list[str],
    k: int,
    out_dir: Path,
    resamples: int = 2000,
) -> Recovery:
    """Recovery of `assign`'s stores (shop_id, token, kmeans_cluster, stratum; `raw`: their
    raw features, row-aligned) from their code distributions; plots and the feature table
    are written under `out_dir`."""
    from simpersona.personas import distribution as dist
    from simpersona.personas import heldout_recovery as heldout
    from simpersona.personas import recovery_plots as plots

    train = assign["shop_id"].is_in(train_shops).to_numpy()
    shop_ids, strata = assign["shop_id"].to_numpy(), assign["stratum"].to_numpy()
    figures: dict[str, Any] = {"buyers": assign.height}
    stores: pl.DataFrame | None = None
    note, paths = "", {}
    for prefix, col, n_k in (("", "token", k), ("kmeans_", "kmeans_cluster", None)):
        codes = assign[col].to_numpy()
        held = heldout.heldout_recovery(
            shop_ids, codes, strata, raw, train, k=n_k, resamples=resamples
        )
        # The paper's in-sample reading (every buyer, every store, A–E), labelled as such.
        insample = dist.population_report(shop_ids, codes, strata, raw, None, k=n_k)
        figures |= {f"{prefix}{n}": v for n, v in finite_numbers(held.figures).items()}
        figures |= {
            f"{prefix}{n}_insample": v for n, v in finite_numbers(insample["figures"]).items()
        }
        js = insample["stratum"].stores.select(
            "shop_id", "n_buyers", pl.col("js").alias(f"{prefix}js_insample")
        )
        if held.stratum is not None:
            js = js.join(
                held.stratum.stores.select("shop_id", pl.col("js").alias(f"{prefix}js_heldout")),
                on="shop_id",
                how="left",
            )
        stores = js if stores is None else stores.join(js.drop("n_buyers"), on="shop_id")
        if prefix == "":
            note = held.note
            if held.stratum is not None:
                paths["stratum_recovery"] = plots.plot_stratum_recovery(
                    held.stratum, out_dir / "stratum_recovery.png"
                )
            if held.features is not None and held.figures["n_stores_heldout"] >= 3:
                paths["feature_recovery"] = plots.plot_feature_recovery(
                    held.features, out_dir / "feature_recovery.png"
                )
                atomic_write_text(
                    held.features.stores.write_csv(), out_dir / "feature_recovery.csv"
                )
    assert stores is not None
    stores = stores.with_columns(
        pl.when(pl.col("shop_id").is_in(train_shops))
        .then(pl.lit("train"))
        .otherwise(pl.lit("held-out"))
        .alias("split")
    ).sort(["split", "n_buyers"], descending=[False, True])
    if note:
        figures["recovery_note"] = note
    return Recovery(figures, stores, note, paths)


def planted_figures(assign: pl.DataFrame, planted: np.ndarray) -> dict[str, float | int]:
    """Tokens and k-means clusters of every buyer against the generator's planted types."""
    from simpersona.personas.quality import planted_agreement

    figures: dict[str, float | int] = {}
    for prefix, col in (("", "token"), ("kmeans_", "kmeans_cluster")):
        agree = planted_agreement(assign[col].to_numpy(), planted)
        figures |= finite_numbers(
            {
                f"{prefix}planted_ari_all": agree["ari"],
                f"{prefix}planted_nmi_all": agree["nmi"],
                f"{prefix}planted_majority_ari_all": agree["majority_ari"],
            }
        )
    return figures
