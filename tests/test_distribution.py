"""Per-store token distributions and population recovery (paper App. B)."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from scipy.spatial.distance import jensenshannon

from simpersona.features.scalars import SCALAR_NAMES
from simpersona.personas import distribution as dist
from simpersona.personas import heldout_recovery as heldout

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_token_distribution_by_hand():
    shops = np.array(["s1", "s1", "s1", "s2", "s2", "s3"])
    codes = np.array([0, 0, 2, 2, 2, 1])
    df = dist.token_distribution(shops, codes, k=4)
    assert df.columns == ["shop_id", "token", "count", "share"]
    rows = {(r["shop_id"], r["token"]): (r["count"], r["share"]) for r in df.iter_rows(named=True)}
    assert rows == {
        ("s1", 0): (2, pytest.approx(2 / 3)),
        ("s1", 2): (1, pytest.approx(1 / 3)),
        ("s2", 2): (2, 1.0),  # a store with one token
        ("s3", 1): (1, 1.0),
    }
    shop_ids, counts, shares = dist.token_share_matrix(shops, codes, k=4)
    assert shop_ids.tolist() == ["s1", "s2", "s3"]
    assert counts.shape == (3, 4)
    np.testing.assert_allclose(shares.sum(axis=1), 1.0)


def test_js_divergence_base2():
    p = np.array([0.2, 0.3, 0.5])
    assert dist.js_divergence(p, p) == pytest.approx(0.0, abs=1e-12)
    assert dist.js_divergence([1, 0, 0], [0, 0.5, 0.5]) == pytest.approx(1.0)
    q = np.array([0.5, 0.4, 0.1])
    assert dist.js_divergence(p, q) == pytest.approx(jensenshannon(p, q, base=2) ** 2)
    m = (p + q) / 2
    by_hand = 0.5 * np.sum(p * np.log2(p / m)) + 0.5 * np.sum(q * np.log2(q / m))
    assert dist.js_divergence(p, q) == pytest.approx(by_hand)
    assert dist.js_divergence(p, q) == pytest.approx(dist.js_divergence(q, p))


def _pure_population(seed: int = 0):
    """Six stores with different mixes of four tokens; each token is pure in stratum and
    has constant raw features, so recovery must be exact."""
    rng = np.random.default_rng(seed)
    token_stratum = np.array(["A", "B", "D", "D"])
    token_feats = rng.uniform(0, 1, size=(4, len(SCALAR_NAMES)))
    shops, codes = [], []
    for s in range(6):
        mix = rng.dirichlet(np.ones(4))
        n = 50 + 20 * s
        c = rng.choice(4, size=n, p=mix)
        shops += [f"shop{s}"] * n
        codes += c.tolist()
    codes = np.array(codes)
    feats = pl.DataFrame(token_feats[codes], schema=list(SCALAR_NAMES), orient="row")
    return np.array(shops), codes, token_stratum[codes], feats


def test_stratum_recovery_exact_when_tokens_pure():
    shops, codes, strata, _ = _pure_population()
    rec = dist.stratum_recovery(shops, codes, strata, k=8)
    assert rec.strata == ("A", "B", "C", "D", "E")
    np.testing.assert_allclose(rec.mix["real"], rec.mix["recovered"], atol=1e-12)
    assert rec.summary["n_stores"] == 6
    assert rec.summary["js_mean"] == pytest.approx(0.0, abs=1e-12)
    assert rec.summary["js_under_0_10"] == 6
    # each store's real mix sums to 1
    sums = rec.mix.group_by("shop_id").agg(pl.col("real").sum(), pl.col("recovered").sum())
    np.testing.assert_allclose(sums["real"], 1.0)
    np.testing.assert_allclose(sums["recovered"], 1.0)


def test_stratum_recovery_by_hand_with_reference():
    # token 0: A A D (reference: the first two buyers only: A A); token 1: D
    shops = np.array(["x", "x", "y", "y"])
    codes = np.array([0, 0, 0, 1])
    strata = np.array(["A", "A", "D", "D"])
    rec = dist.stratum_recovery(shops, codes, strata, strata_order=("A", "D"))
    mix = {(r["shop_id"], r["stratum"]): r["recovered"] for r in rec.mix.iter_rows(named=True)}
    # P(A|0) = 2/3 on all buyers; store y = ½·token0 + ½·token1
    assert mix[("y", "A")] == pytest.approx(0.5 * 2 / 3)
    assert mix[("y", "D")] == pytest.approx(0.5 * 1 / 3 + 0.5)
    js_y = rec.stores.filter(pl.col("shop_id") == "y")["js"][0]
    assert js_y == pytest.approx(dist.js_divergence([0, 1], [1 / 3, 2 / 3]))
    ref = np.array([True, True, False, False])
    rec2 = dist.stratum_recovery(shops, codes, strata, reference=ref, strata_order=("A", "D"))
    mix2 = {(r["shop_id"], r["stratum"]): r["recovered"] for r in rec2.mix.iter_rows(named=True)}
    # P(A|0) = 1 on the reference; token 1 is unseen there -> the reference's overall mix (A)
    assert mix2[("y", "A")] == pytest.approx(1.0)
    # a separate reference set, given as (codes, strata)
    rec3 = dist.stratum_recovery(
        shops, codes, strata, reference=(np.array([0, 1]), np.array(["D", "A"])), k=2
    )
    mix3 = {(r["shop_id"], r["stratum"]): r["recovered"] for r in rec3.mix.iter_rows(named=True)}
    assert mix3[("x", "D")] == pytest.approx(1.0)
    assert rec3.summary["js_max"] == pytest.approx(1.0)


def test_feature_recovery_exact_when_tokens_pure():
    shops, codes, _, feats = _pure_population()
    rec = dist.feature_recovery(shops, codes, feats, k=4)
    assert set(rec.r2) == set(SCALAR_NAMES)
    for v in rec.r2.values():
        assert v == pytest.approx(1.0)
    np.testing.assert_allclose(rec.stores["real"], rec.stores["reconstructed"], atol=1e-12)
    assert rec.summary["r2_intent_strength"] == pytest.approx(1.0)
    # real store means are plain means of the store's buyers
    s0 = feats.filter(pl.Series(shops == "shop0"))["atc_rate"].mean()
    got = rec.stores.filter((pl.col("shop_id") == "shop0") & (pl.col("feature") == "atc_rate"))
    assert got["real"][0] == pytest.approx(s0)


def test_feature_recovery_array_input_and_single_store():
    x = np.array([[1.0], [3.0], [10.0]])
    rec = dist.feature_recovery(["a", "a", "a"], [0, 0, 1], x, feature_names=["f"])
    assert math.isnan(rec.r2["f"])  # one store: R² undefined
    row = rec.stores.row(0, named=True)
    assert row["real"] == pytest.approx(14 / 3)
    assert row["reconstructed"] == pytest.approx(2 / 3 * 2.0 + 1 / 3 * 10.0)


def test_raw_features_for_aligns_rows():
    feats = pl.DataFrame(
        {"shop_id": ["s", "s", "t"], "buyer_id": ["1", "2", "1"], "atc_rate": [0.1, 0.2, 0.3]}
    )
    assign = pl.DataFrame({"shop_id": ["t", "s"], "buyer_id": ["1", "2"], "token": [5, 6]})
    out = dist.raw_features_for(assign, feats, ["atc_rate"])
    assert out["atc_rate"].to_list() == [0.3, 0.2]
    with pytest.raises(ValueError):
        dist.raw_features_for(
            pl.DataFrame({"shop_id": ["u"], "buyer_id": ["9"]}), feats, ["atc_rate"]
        )


def test_population_report_writes_pngs(tmp_path):
    rng = np.random.default_rng(3)
    shops, codes, strata, feats = _pure_population()
    noisy = codes.copy()
    flip = rng.random(codes.size) < 0.2
    noisy[flip] = rng.integers(0, 4, flip.sum())
    out = dist.population_report(shops, noisy, strata, feats, tmp_path / "figs", k=4)
    figs = out["figures"]
    for key in ("js_mean", "js_median", "js_under_0_10", "n_stores", "r2_intent_strength"):
        assert key in figs
    assert 0.0 <= figs["js_mean"] <= 1.0
    for p in out["paths"].values():
        data = p.read_bytes()
        assert len(data) > 1000 and data.startswith(PNG_MAGIC)
    table = dist.appendix_b_table(figs)
    assert "| mean JS divergence (base 2) |" in table and "0.054" in table
    # rendered in recovery_table.py, still importable from distribution.py
    from simpersona.personas.distribution import appendix_b_table
    from simpersona.personas.recovery_table import appendix_b_table as rendered

    assert appendix_b_table is rendered is dist.appendix_b_table
    with pytest.raises(AttributeError):
        dist.no_such_name  # noqa: B018


def test_plots_with_many_stores_and_one_store(tmp_path):
    rng = np.random.default_rng(0)
    n = 3000
    shops = rng.integers(0, 45, n).astype(str)
    codes = rng.integers(0, 16, n)
    strata = rng.choice(list("ABCD"), n)
    feats = pl.DataFrame({f: rng.random(n) for f in dist.HEADLINE_FEATURES})
    out = dist.population_report(
        shops, codes, strata, feats, tmp_path, feature_names=dist.HEADLINE_FEATURES
    )
    assert out["figures"]["n_stores"] == 45
    assert all(p.stat().st_size > 0 for p in out["paths"].values())
    one = dist.population_report(
        ["only"] * 3,
        [2, 2, 2],
        ["A", "D", "D"],
        feats.head(3),
        tmp_path / "one",
        prefix="x_",
        feature_names=dist.HEADLINE_FEATURES,
    )
    assert one["figures"]["x_n_stores"] == 1
    assert one["figures"]["x_js_mean"] == pytest.approx(0.0, abs=1e-12)  # one token: exact
    assert all(p.read_bytes().startswith(PNG_MAGIC) for p in one["paths"].values())


def test_js_of_identical_distributions_is_exactly_zero_and_never_nan():
    rng = np.random.default_rng(0)
    for _ in range(500):
        p = rng.dirichlet(np.full(rng.integers(2, 8), 0.3))
        p[rng.random(p.size) < 0.3] = 0.0  # zeros in the support
        if p.sum() == 0:
            continue
        assert dist.js_divergence(p, p) == 0.0
        assert dist.js_divergence(p, 7.0 * p) == 0.0  # the same distribution, unnormalised
        q = rng.dirichlet(np.ones(p.size))
        d = dist.js_divergence(p, q)
        assert 0.0 < d <= 1.0 and math.isfinite(d)
    for bad in ([0, 0, 0], [np.nan, 1, 0], [-0.1, 0.6, 0.5]):
        with pytest.raises(ValueError, match="not a distribution"):
            dist.js_divergence(bad, [0.2, 0.3, 0.5])


def _train_and_heldout(seed: int = 0, n_shops: int = 8):
    """Stores over four pure tokens (A, B, D, E) with constant features; the first half train."""
    shops, codes, strata, feats = _pure_population(seed)
    token_stratum = np.array(["A", "B", "D", "E"])
    strata = token_stratum[codes]
    train = np.isin(shops, ["shop0", "shop1", "shop2"])
    return shops, codes, strata, feats, train


def test_heldout_recovery_uses_training_stores_only_and_strata_a_to_d():
    shops, codes, strata, feats, train = _train_and_heldout()
    rec = heldout.heldout_recovery(shops, codes, strata, feats, train, k=4, resamples=200)
    f = rec.figures
    assert f["n_stores_heldout"] == 3 and rec.stratum.strata == ("A", "B", "C", "D")
    assert sorted(rec.stratum.stores["shop_id"].to_list()) == ["shop3", "shop4", "shop5"]
    assert f["js_mean_heldout"] == 0.0 and f["js_mean_heldout_ci_high"] == 0.0  # pure tokens
    assert f["r2_intent_strength_heldout"] == pytest.approx(1.0)
    assert f["r2_intent_strength_heldout_ci_low"] == pytest.approx(1.0)
    # E on its own line: real share of token 3's buyers, recovered exactly (pure token).
    e_real = np.mean([np.mean(strata[shops == s] == "E") for s in ("shop3", "shop4", "shop5")])
    assert f["e_share_real_heldout"] == pytest.approx(e_real)
    assert f["e_share_recovered_heldout"] == pytest.approx(e_real)
    assert rec.note == ""
    # The held-out stores' own buyers never shape the reference: changing their strata
    # changes the real mix they are scored against, not the profiles.
    flipped = strata.copy()
    flipped[(~train) & (strata == "A")] = "B"
    again = heldout.heldout_recovery(shops, codes, flipped, feats, train, k=4, resamples=50)
    assert again.figures["js_mean_heldout"] > 0.02
    held = ~train & (flipped != "E")
    in_sample = dist.stratum_recovery(shops[held], codes[held], flipped[held], k=4)
    assert in_sample.summary["js_mean"] < 1e-12  # fitted on the stores it scores: exact


def test_heldout_recovery_says_when_it_is_undefined():
    shops, codes, strata, feats, _ = _train_and_heldout()
    none = heldout.heldout_recovery(shops, codes, strata, feats, np.ones(codes.size, bool), k=4)
    assert "undefined" in none.note and "js_mean_heldout" not in none.figures
    one = heldout.heldout_recovery(shops, codes, strata, feats, shops != "shop5", k=4)
    assert one.figures["n_stores_heldout"] == 1 and "R² across stores is undefined" in one.note
    assert "r2_atc_rate_heldout" not in one.figures
    # Buyers are resampled within stores, so even one store's JS has an interval.
    assert one.figures["js_mean_heldout_ci_low"] <= one.figures["js_mean_heldout"]
