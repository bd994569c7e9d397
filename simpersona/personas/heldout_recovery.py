"""Population recovery on held-out stores, as the paper runs App. B: token profiles fitted on
the training stores' buyers only, a held-out store's mix p̂_s recovers its strata and feature
means; bootstrap intervals over stores (`simpersona.personas.distribution` has the pieces)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from simpersona.features.scalars import STRATA
from simpersona.personas.codes import as_codes as _codes
from simpersona.personas.distribution import (
    HEADLINE_FEATURES,
    JS_GOOD,
    FeatureRecovery,
    StratumRecovery,
    _k,
    feature_matrix,
    feature_recovery,
    js_divergence,
    stratum_recovery,
)
from simpersona.polars_scalars import as_float

FUNNEL_STRATA: tuple[str, ...] = ("A", "B", "C", "D")  # App. B's strata; E on its own line


@dataclass
class HeldoutRecovery:
    """Recovery on the stores the codebook never trained on. `figures`: flat
    (`js_mean_heldout`, its `_ci_low`/`_ci_high`, `js_median_heldout`,
    `js_under_0_10_heldout`, `n_stores_heldout`, `r2_<feature>_heldout` with CIs,
    `e_share_real_heldout`, `e_share_recovered_heldout`); `note`: a plain sentence where a
    figure is undefined (no held-out store; R² needs three)."""

    figures: dict[str, Any]
    note: str
    stratum: StratumRecovery | None = None
    features: FeatureRecovery | None = None
    e_line: pl.DataFrame | None = None  # per held-out store: real and recovered E share


def _r2(real: np.ndarray, recon: np.ndarray) -> np.ndarray:
    """R² along the last axis (NaN where the real values do not vary)."""
    ss_tot = ((real - real.mean(axis=-1, keepdims=True)) ** 2).sum(axis=-1)
    ss_res = ((real - recon) ** 2).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ss_tot > 0, 1.0 - ss_res / ss_tot, np.nan)


def _recovery_draw(
    w_ref: np.ndarray,
    w_ev: np.ndarray,
    ref: tuple[np.ndarray, np.ndarray, np.ndarray],
    ev: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    n_k: int,
    n_l: int,
    n_s: int,
) -> tuple[np.ndarray, np.ndarray]:
    """(JS per store, R² per feature) with buyers weighted by `w_ref` / `w_ev`: the profiles
    and centroids from the weighted reference buyers, each store's real and recovered mix
    and feature means from its weighted buyers (the statistic of the buyer bootstrap)."""
    rc, rl, rx = ref
    es, ec, el, ex = ev
    counts = np.bincount(rc * n_l + rl, weights=w_ref, minlength=n_k * n_l).reshape(n_k, n_l)
    support = counts.sum(axis=1)
    overall = counts.sum(axis=0) / max(counts.sum(), 1e-12)
    prof = np.where(support[:, None] > 0, counts / np.maximum(support, 1e-12)[:, None], overall)
    sums = np.stack([np.bincount(rc, weights=w_ref * rx[:, j], minlength=n_k) for j in
                     range(rx.shape[1])], axis=1)  # fmt: skip
    mean = (w_ref @ rx) / max(w_ref.sum(), 1e-12)
    cent = np.where(support[:, None] > 0, sums / np.maximum(support, 1e-12)[:, None], mean)
    share = np.bincount(es * n_k + ec, weights=w_ev, minlength=n_s * n_k).reshape(n_s, n_k)
    n_b = share.sum(axis=1, keepdims=True)
    share = share / np.maximum(n_b, 1e-12)
    real = np.bincount(es * n_l + el, weights=w_ev, minlength=n_s * n_l).reshape(n_s, n_l)
    real = real / np.maximum(real.sum(axis=1, keepdims=True), 1e-12)
    recovered = share @ prof
    js = np.array(
        [js_divergence(real[i], recovered[i]) if n_b[i, 0] > 0 else np.nan for i in range(n_s)]
    )
    real_x = np.stack([np.bincount(es, weights=w_ev * ex[:, j], minlength=n_s) for j in
                       range(ex.shape[1])], axis=1) / np.maximum(n_b, 1e-12)  # fmt: skip
    return js, _r2((real_x).T, (share @ cent).T)


def heldout_recovery(
    shop_ids: Any,
    codes: Any,
    strata: Any,
    features: Any,
    train_mask: Any,
    *,
    k: int | None = None,
    feature_names: Sequence[str] | None = None,
    resamples: int = 1000,
    seed: int = 0,
) -> HeldoutRecovery:
    """App. B on held-out stores: P(stratum | k) and the token centroids are estimated on the
    training stores' buyers only (`train_mask`), then each held-out store's mix and feature
    means are recovered from its own p̂_s. Strata A–D as the paper (its training sample has
    no E); stratum E's share is reported on its own line (profiles over A–E).

    Intervals: buyers resampled within their stores (Poisson weights, training and held-out
    stores alike), `resamples` times, everything recomputed: how much the figures move with
    the stores' finite buyer samples, for these stores (basic bootstrap intervals: the
    plug-in JS and R² are biased by that noise). Resampling the stores themselves
    would say how they generalise to other stores, which three or six stores cannot (a
    three-store bootstrap put R² anywhere from 1 to −10^28). The headline features
    (`HEADLINE_FEATURES`) get intervals; every feature gets its R² (three stores or more)."""
    from simpersona.evaluation.bootstrap import interval

    c = _codes(codes)
    lab = np.asarray(strata).astype(str)
    shops = np.asarray(shop_ids).astype(str)
    train = np.asarray(train_mask, dtype=bool)
    if not (c.size == lab.size == shops.size == train.size):
        raise ValueError("shop_ids, codes, strata and train_mask differ in length")
    x, names = feature_matrix(features, feature_names)
    held = ~train
    held_shops = sorted(set(shops[held].tolist()))
    if not held_shops:
        return HeldoutRecovery(
            {"n_stores_heldout": 0},
            "Recovery across stores is undefined here: every store trained the codebook, so "
            "no store is held out to recover (evaluate with at least one held-out store).",
        )
    if not train.any():
        raise ValueError("no training buyers: the reference P(stratum | k) needs some")
    n_k = _k(c, k)
    funnel = np.isin(lab, FUNNEL_STRATA)
    ref, ev = train & funnel, held & funnel
    srec = stratum_recovery(
        shops[ev], c[ev], lab[ev], k=n_k, reference=(c[ref], lab[ref]), strata_order=FUNNEL_STRATA
    )
    frec = feature_recovery(
        shops[ev], c[ev], x[ev], feature_names=names, k=n_k, reference=(c[ref], x[ref])
    )
    js = srec.stores["js"].to_numpy()
    n_st = js.size
    n_buyers = int(ev.sum())
    figs: dict[str, Any] = {
        "n_stores_heldout": n_st,
        "buyers_heldout": n_buyers,
        "js_median_heldout": float(np.median(js)),
        "js_under_0_10_heldout": int((js < JS_GOOD).sum()),
        "js_max_heldout": float(js.max()),
    }
    # The buyer bootstrap (see the docstring), stores in the order of srec.stores.
    order = srec.stores["shop_id"].to_list()
    col = {s: i for i, s in enumerate(FUNNEL_STRATA)}
    head = [names.index(f) for f in HEADLINE_FEATURES if f in names]
    ref_t = (c[ref], np.array([col[v] for v in lab[ref]]), x[ref][:, head])
    ev_t = (
        np.searchsorted(np.array(order), shops[ev]),
        c[ev],
        np.array([col[v] for v in lab[ev]]),
        x[ev][:, head],
    )
    rng = np.random.default_rng(seed)
    boot_js, boot_r2 = [], []
    for _ in range(resamples):
        j, r = _recovery_draw(
            rng.poisson(1.0, ref.sum()).astype(float), rng.poisson(1.0, n_buyers).astype(float),
            ref_t, ev_t, n_k, len(FUNNEL_STRATA), n_st,
        )  # fmt: skip
        boot_js.append(np.nanmean(j))
        boot_r2.append(r)
    # Basic intervals: the plug-in JS and R² are biased by the buyers' sampling noise.
    iv = interval(float(js.mean()), np.array(boot_js), n_buyers, n_st, method="basic",
                  bounds=(0.0, 1.0))  # fmt: skip
    figs |= {"js_mean_heldout": iv.estimate, "js_mean_heldout_ci_low": iv.low,
             "js_mean_heldout_ci_high": iv.high}  # fmt: skip
    notes = []
    if n_st >= 3:  # R² of two points is 1 − (tiny)/(tiny): a number, not a measurement
        st = frec.stores
        r2_boot = np.array(boot_r2)  # (resamples, headline features)
        for f in names:
            d = st.filter(pl.col("feature") == f)
            est = float(_r2(d["real"].to_numpy(), d["reconstructed"].to_numpy()))
            figs[f"r2_{f}_heldout"] = est
            if f in HEADLINE_FEATURES and f in names:
                ci = interval(est, r2_boot[:, [names[i] for i in head].index(f)], n_buyers,
                              n_st, method="basic", bounds=(-math.inf, 1.0))  # fmt: skip
                figs |= {f"r2_{f}_heldout_ci_low": ci.low, f"r2_{f}_heldout_ci_high": ci.high}
    else:
        notes.append(f"R² across stores is undefined with {n_st} held-out store(s) (needs 3)")
    # Stratum E on its own line: profiles over A–E from the training stores' buyers.
    all5 = stratum_recovery(shops[held], c[held], lab[held], k=n_k,
                            reference=(c[train], lab[train]), strata_order=STRATA)  # fmt: skip
    e = all5.mix.filter(pl.col("stratum") == "E").select("shop_id", "real", "recovered")
    figs["e_share_real_heldout"] = as_float(e["real"].mean())
    figs["e_share_recovered_heldout"] = as_float(e["recovered"].mean())
    note = "; ".join(notes)
    return HeldoutRecovery(figs, note[:1].upper() + note[1:] + "." if note else "", srec, frec, e)
